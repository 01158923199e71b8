// Package state records what a nattrace session changes on the host, so
// that the session itself, or "nattrace cleanup" and the next session after
// a SIGKILL, can undo it. Every change is written to the state file before
// it is made; undoing a change that is not there is not an error.
package state

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultDir is where state files live.
const DefaultDir = "/run/nattrace"

// Change kinds.
const (
	KindNFTTable    = "nft-table"    // table inet nattrace_<id>
	KindLegacyRules = "legacy-rules" // raw TRACE rules and chains
	KindSysctl      = "sysctl"       // a sysctl set to New; Old restores it
)

// Change is one modification of one namespace.
type Change struct {
	Kind       string `json:"kind"`
	NetnsInode uint64 `json:"netns_inode"`
	NetnsName  string `json:"netns_name"`
	NetnsPath  string `json:"netns_path"`
	Sysctl     string `json:"sysctl,omitempty"`
	Old        string `json:"old,omitempty"`
	New        string `json:"new,omitempty"`
	Done       bool   `json:"done"` // false while the change is being made
}

// Session is the content of a state file.
type Session struct {
	ID        string    `json:"id"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // /proc/PID/stat field 22, to tell pid reuse
	Started   time.Time `json:"started"`
	Command   string    `json:"command"`
	Changes   []Change  `json:"changes"`
}

// File is a live session's state file.
type File struct {
	mu   sync.Mutex
	path string
	S    Session
}

// NewID returns a random session id of 8 hex digits.
func NewID() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Create writes a new state file for this process.
func Create(dir, id, command string) (*File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	st, err := ProcStartTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	f := &File{path: filepath.Join(dir, id+".json"), S: Session{
		ID: id, PID: os.Getpid(), StartTime: st, Started: time.Now(), Command: command,
	}}
	return f, f.write()
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

func (f *File) write() error {
	b, err := json.MarshalIndent(f.S, "", "  ")
	if err != nil {
		return err
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return os.Rename(tmp, f.path)
}

// Begin records a change about to be made and returns its index.
func (f *File) Begin(c Change) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.Done = false
	f.S.Changes = append(f.S.Changes, c)
	return len(f.S.Changes) - 1, f.write()
}

// Commit marks a change as made.
func (f *File) Commit(i int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.S.Changes[i].Done = true
	return f.write()
}

// Forget drops a change that was undone.
func (f *File) Forget(i int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.S.Changes[i].Kind = ""
	return f.write()
}

// Remove deletes the state file (after every change was undone).
func (f *File) Remove() error {
	err := os.Remove(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// List reads every state file in dir.
func List(dir string) ([]Session, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Session
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var s Session
		if json.Unmarshal(b, &s) != nil || s.ID == "" {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// Alive reports whether the session's process still runs (same pid and
// same start time).
func (s *Session) Alive() bool {
	st, err := ProcStartTime(s.PID)
	return err == nil && st == s.StartTime
}

// RemoveFile deletes a session's state file from dir.
func RemoveFile(dir, id string) error {
	err := os.Remove(filepath.Join(dir, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ProcStartTime reads a process's start time in clock ticks since boot.
func ProcStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may contain spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("bad /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// fields after ")" start at field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, errors.New("bad /proc/PID/stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}
