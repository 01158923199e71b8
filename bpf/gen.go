// Package bpf holds nattrace's BPF probes: the C source, its bpf2go output
// (committed: a plain "go build" needs no clang) and the loader.
//
// Regenerate with "make generate" (clang, libbpf-dev). CI regenerates and
// fails when the committed output differs.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -D__TARGET_ARCH_x86" -target bpfel -type event -type lit -type clause -type config -type tuple probes c/nattrace.bpf.c -- -I/usr/include/bpf -Ic
