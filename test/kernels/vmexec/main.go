// Command vmexec runs a command inside a qemu VM booted with the kernel that
// test/kernels/kernel.env pins (Debian's 6.1), with the host's root shared
// read-only and a writable /tmp, and exits with the command's exit code. It
// is made to be "go test -exec":
//
//	go test -exec 'go run ./test/kernels/vmexec' ./cmd/nattrace
//
// The command runs as root in the guest's initial namespaces, in the current
// directory, with the NATTRACE_*, GO*, PATH and TMPDIR variables passed on.
// Its output streams to stdout as it comes. The VM is killed on timeout or
// signal; its temporary directory is removed.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const exitMarker = "@@NATTRACE-EXIT "

func main() {
	timeout := flag.Duration("timeout", 40*time.Minute, "kill the VM after this long")
	mem := flag.Int("mem", 1536, "guest memory in MiB")
	verbose := flag.Bool("v", false, "print the guest's kernel log after the run")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: vmexec [flags] COMMAND [ARGS...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	code, err := run(flag.Args(), *timeout, *mem, *verbose)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: %v\n", err)
		if code == 0 {
			code = 125
		}
	}
	os.Exit(code)
}

// prepare runs prepare.sh, which prints the kernel's cache directory.
func prepare() (string, error) {
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(filepath.Dir(self)), "prepare.sh")
	if _, err := os.Stat(script); err != nil {
		wd, _ := os.Getwd()
		return "", fmt.Errorf("prepare.sh not found next to %s (cwd %s)", self, wd)
	}
	cmd := exec.Command("/bin/sh", script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %v", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// job writes the script the guest runs.
func job(dir string, args []string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("cd " + shellQuote(wd) + " || exit 125\n")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATTRACE_") || strings.HasPrefix(k, "GO") || k == "PATH" || k == "TMPDIR" || k == "CI" {
			b.WriteString("export " + shellQuote(kv) + "\n")
		}
	}
	b.WriteString("export HOME=/root NATTRACE_IN_VM=1\n")
	b.WriteString("exec")
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	path := filepath.Join(dir, "job.sh")
	return path, os.WriteFile(path, []byte(b.String()), 0o755)
}

func run(args []string, timeout time.Duration, mem int, verbose bool) (int, error) {
	if os.Geteuid() != 0 {
		return 125, errors.New("needs root (the guest runs the command as root over the host's files)")
	}
	kdir, err := prepare()
	if err != nil {
		return 125, err
	}
	kernel, err := findKernel(kdir)
	if err != nil {
		return 125, err
	}
	dir, err := os.MkdirTemp("/tmp", "nattrace-vm-")
	if err != nil {
		return 125, err
	}
	defer os.RemoveAll(dir)
	script, err := job(dir, args)
	if err != nil {
		return 125, err
	}
	outLog, conLog := filepath.Join(dir, "out.log"), filepath.Join(dir, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "1", "-m", strconv.Itoa(mem),
		"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
		"-kernel", kernel, "-initrd", filepath.Join(kdir, "initramfs.cpio.gz"),
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4 nattrace.job="+script+" nattrace.cache="+kdir,
		"-fsdev", "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=host,mount_tag=hostroot",
		"-serial", "file:"+conLog, "-serial", "file:"+outLog,
	)
	qemu.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	qemu.Cancel = func() error { return syscall.Kill(-qemu.Process.Pid, syscall.SIGKILL) }
	var qerr bytes.Buffer
	qemu.Stderr = &qerr
	if err := qemu.Start(); err != nil {
		return 125, err
	}
	done := make(chan error, 1)
	go func() { done <- qemu.Wait() }()
	var off int64
	code := -1
	stream := func() {
		b, _ := os.ReadFile(outLog)
		if int64(len(b)) <= off {
			return
		}
		chunk := b[off:]
		// Hold back a partial last line: it may be the marker.
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			chunk = chunk[:i+1]
		} else {
			return
		}
		off += int64(len(chunk))
		for _, line := range bytes.SplitAfter(chunk, []byte("\n")) {
			if s := strings.TrimSpace(string(line)); strings.HasPrefix(s, exitMarker) {
				code, _ = strconv.Atoi(strings.TrimPrefix(s, exitMarker))
				continue
			}
			os.Stdout.Write(line)
		}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case werr = <-done:
			break loop
		case <-tick.C:
			stream()
		}
	}
	stream()
	if verbose || code < 0 {
		if con, _ := os.ReadFile(conLog); len(con) > 0 {
			lines := strings.Split(strings.TrimRight(string(con), "\n"), "\n")
			fmt.Fprintf(os.Stderr, "vmexec: guest kernel log (last lines):\n%s\n", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
	if ctx.Err() != nil {
		return 125, fmt.Errorf("VM stopped: %v", context.Cause(ctx))
	}
	if code < 0 {
		return 125, fmt.Errorf("the guest ended without an exit code (qemu: %v %s)", werr, strings.TrimSpace(qerr.String()))
	}
	return code, nil
}

func findKernel(kdir string) (string, error) {
	k, _ := filepath.Glob(filepath.Join(kdir, "root/boot/vmlinuz-*"))
	if len(k) != 1 {
		return "", fmt.Errorf("no kernel in %s/root/boot", kdir)
	}
	return k[0], nil
}
