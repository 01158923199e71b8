// Package kernels runs nattrace's privileged tests on a second kernel:
// Debian 12's 6.1 (pinned in kernel.env), booted under qemu by vmexec
// ("go test -exec"), with the host's root shared read-only. prepare.sh
// fetches and unpacks the kernel into a cache outside the repository.
package kernels
