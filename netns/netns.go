// Package netns names and enters Linux network namespaces: "NAME" (as made
// by "ip netns add"), a path to a namespace file, "pid:N", or "" for the
// namespace nattrace runs in.
package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	vnl "github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where "ip netns add" keeps named namespaces.
const RunDir = "/run/netns"

// NS is a network namespace, identified by the inode of its nsfs file.
type NS struct {
	Name  string // display name: NAME, pid:N, the path, or "host"
	Path  string // a path that opens the namespace
	Inode uint64
	Dev   uint64
	self  bool // the namespace this process runs in
}

// ErrNotFound is returned for a namespace that does not exist.
var ErrNotFound = errors.New("network namespace not found")

// Current returns the namespace the calling process runs in.
func Current() (*NS, error) {
	ns, err := open("host", "/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	ns.self = true
	return ns, nil
}

// Resolve finds a namespace by NAME, PATH or pid:N; "" is the current one.
func Resolve(spec string) (*NS, error) {
	switch {
	case spec == "" || spec == "host":
		return Current()
	case strings.HasPrefix(spec, "pid:"):
		pid, err := strconv.Atoi(spec[4:])
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bad namespace %q: expected pid:N with a process id", spec)
		}
		ns, err := open(spec, fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			return nil, fmt.Errorf("network namespace %s: process %d: %w", spec, pid, ErrNotFound)
		}
		return ns.markSelf()
	case strings.Contains(spec, "/"):
		ns, err := open(spec, spec)
		if err != nil {
			return nil, fmt.Errorf("network namespace %s: %w", spec, err)
		}
		return ns.markSelf()
	}
	ns, err := open(spec, RunDir+"/"+spec)
	if err != nil {
		return nil, fmt.Errorf("network namespace %q: %w (see 'ip netns list')", spec, ErrNotFound)
	}
	return ns.markSelf()
}

func (n *NS) markSelf() (*NS, error) {
	cur, err := Current()
	if err == nil && cur.Inode == n.Inode && cur.Dev == n.Dev {
		n.self = true
	}
	return n, nil
}

func open(name, path string) (*NS, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, ErrNotFound
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return nil, err
	}
	if fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC {
		return nil, fmt.Errorf("%s is not a namespace file", path)
	}
	return &NS{Name: name, Path: path, Inode: st.Ino, Dev: st.Dev}, nil
}

// FindByInode finds a namespace still alive with the given inode: a named
// one under /run/netns, or one held by a process.
func FindByInode(ino uint64) (*NS, bool) {
	if cur, err := Current(); err == nil && cur.Inode == ino {
		return cur, true
	}
	if ents, err := os.ReadDir(RunDir); err == nil {
		for _, e := range ents {
			if ns, err := open(e.Name(), RunDir+"/"+e.Name()); err == nil && ns.Inode == ino {
				ns, _ = ns.markSelf()
				return ns, true
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		path := "/proc/" + p.Name() + "/ns/net"
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil && st.Ino == ino {
			if ns, err := open("pid:"+p.Name(), path); err == nil {
				ns, _ = ns.markSelf()
				return ns, true
			}
		}
	}
	return nil, false
}

// IsCurrent reports whether this is the namespace nattrace runs in.
func (n *NS) IsCurrent() bool { return n.self }

func (n *NS) String() string { return n.Name }

// Open returns a file descriptor of the namespace; the caller closes it.
func (n *NS) Open() (int, error) {
	return unix.Open(n.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets created
// by fn stay in the namespace.
func (n *NS) Do(fn func() error) error {
	if n.self {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: if leaving the namespace failed it
		// must not run other goroutines, and the runtime then ends it.
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		fd, err := n.Open()
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", n.Name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w", n.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Command returns a command that runs inside the namespace (through
// nsenter(1) unless it is the current one).
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	if n.self {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + n.Path, "--", name}, args...)...)
}

// Output runs a command in the namespace and returns its standard output;
// the error includes the command's standard error.
func (n *NS) Output(name string, args ...string) ([]byte, error) {
	cmd := n.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return out, fmt.Errorf("%s %s (in %s): %s", name, strings.Join(args, " "), n.Name, firstLine(msg))
	}
	return out, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ReadSysctl reads a sysctl (dotted name) as seen inside the namespace.
func (n *NS) ReadSysctl(name string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(sysctlPath(name))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// WriteSysctl writes a sysctl inside the namespace.
func (n *NS) WriteSysctl(name, value string) error {
	return n.Do(func() error {
		return os.WriteFile(sysctlPath(name), []byte(value), 0)
	})
}

func sysctlPath(name string) string {
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

// ReadNetFile reads a file under /proc/net as seen inside the namespace.
func (n *NS) ReadNetFile(name string) ([]byte, error) {
	var b []byte
	err := n.Do(func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/" + name)
		return err
	})
	return b, err
}

// Netlink returns a netlink handle that works inside the namespace; the
// caller closes it.
func (n *NS) Netlink() (*vnl.Handle, error) {
	fd, err := n.Open()
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	defer unix.Close(fd)
	return vnl.NewHandleAt(vns.NsHandle(fd))
}
