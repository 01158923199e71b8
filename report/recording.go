package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nattrace/nattrace/event"
)

// Recording is what "nattrace flow --record DIR" saved.
type Recording struct {
	Dir      string
	Session  event.Session
	Packets  []*event.Packet
	Flows    []*event.Flow
	Stats    *event.Stats
	EnvStart []*event.NetnsSnapshot
	EnvEnd   []*event.NetnsSnapshot
	Capture  string // path of the pcapng file, "" when there is none
}

// RecordingError names the file of a recording and what is wrong with it.
type RecordingError struct {
	File string
	Err  error
}

func (e *RecordingError) Error() string { return fmt.Sprintf("%s: %v", e.File, e.Err) }
func (e *RecordingError) Unwrap() error { return e.Err }

// maxLine bounds one JSON line of a stream.
const maxLine = 16 << 20

// ReadStream parses a JSON Lines stream: a session object first, then
// packets and flows, a stats object last (absent if the session was cut
// short). Any other line is an error naming the line.
func ReadStream(r io.Reader) (*Recording, error) {
	rec := &Recording{}
	s := bufio.NewScanner(r)
	s.Buffer(nil, maxLine)
	n := 0
	for s.Scan() {
		n++
		line := bytes.TrimSpace(s.Bytes())
		if len(line) == 0 {
			continue
		}
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(line, &head); err != nil {
			if !s.Scan() { // the last line: cut off while it was written
				return rec, fmt.Errorf("line %d: truncated (the session was cut off?)", n)
			}
			return rec, fmt.Errorf("line %d: not JSON: %v", n, err)
		}
		if n == 1 && head.Type != "session" {
			return rec, fmt.Errorf("line 1: a %q object, want the session object", head.Type)
		}
		var err error
		switch head.Type {
		case "session":
			if n != 1 {
				return rec, fmt.Errorf("line %d: a second session object", n)
			}
			err = json.Unmarshal(line, &rec.Session)
			if err == nil && rec.Session.Version != 1 {
				err = fmt.Errorf("stream version %d, this nattrace reads version 1", rec.Session.Version)
			}
		case "packet":
			p := &event.Packet{}
			err = json.Unmarshal(line, p)
			rec.Packets = append(rec.Packets, p)
		case "flow":
			f := &event.Flow{}
			err = json.Unmarshal(line, f)
			rec.Flows = append(rec.Flows, f)
		case "stats":
			rec.Stats = &event.Stats{}
			err = json.Unmarshal(line, rec.Stats)
		default:
			err = fmt.Errorf("unknown type %q", head.Type)
		}
		if err != nil {
			return rec, fmt.Errorf("line %d: %v", n, err)
		}
	}
	if err := s.Err(); err != nil {
		return rec, err
	}
	if n == 0 {
		return rec, errors.New("empty: no session object")
	}
	return rec, nil
}

// LoadRecording reads a recording directory.
func LoadRecording(dir string) (*Recording, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, &RecordingError{dir, errors.New("no such recording directory")}
	}
	if !st.IsDir() {
		return nil, &RecordingError{dir, errors.New("not a directory (record with 'nattrace flow --record DIR')")}
	}
	stream := filepath.Join(dir, "session.jsonl")
	f, err := os.Open(stream)
	if err != nil {
		return nil, &RecordingError{stream, errors.New("missing: not a nattrace recording")}
	}
	defer f.Close()
	rec, err := ReadStream(f)
	if err != nil {
		return nil, &RecordingError{stream, err}
	}
	rec.Dir = dir
	for _, x := range []struct {
		name string
		dst  *[]*event.NetnsSnapshot
	}{{"env-start.json", &rec.EnvStart}, {"env-end.json", &rec.EnvEnd}} {
		path := filepath.Join(dir, x.name)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // a session cut short has no end snapshot
		}
		if err != nil {
			return nil, &RecordingError{path, err}
		}
		if err := json.Unmarshal(b, x.dst); err != nil {
			return nil, &RecordingError{path, fmt.Errorf("corrupt: %v", err)}
		}
	}
	if p := filepath.Join(dir, "capture.pcapng"); fileExists(p) {
		rec.Capture = p
	}
	return rec, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
