package cmd

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nattrace/nattrace/event"
	"github.com/nattrace/nattrace/report"
	"github.com/nattrace/nattrace/trace"
	"github.com/nattrace/nattrace/trace/snapshot"
)

// Files of a recording directory.
const (
	recStream   = "session.jsonl"
	recCapture  = "capture.pcapng"
	recEnvStart = "env-start.json"
	recEnvEnd   = "env-end.json"
)

// recording writes "flow --record DIR".
type recording struct {
	dir    string
	sess   *trace.Session
	stream *os.File
	json   *report.JSON
}

// startRecording creates the directory and the stream, and snapshots the
// namespaces before any trace rule is installed.
func startRecording(dir string, sess *trace.Session) (*recording, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &trace.UsageError{Msg: fmt.Sprintf("--record %s: %v", dir, err)}
	}
	f, err := os.OpenFile(filepath.Join(dir, recStream), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, &trace.UsageError{Msg: fmt.Sprintf("--record: %v", err)}
	}
	r := &recording{dir: dir, sess: sess, stream: f, json: report.NewJSON(f)}
	if err := r.snapshot(recEnvStart); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func (r *recording) snapshot(name string) error {
	var snaps []*event.NetnsSnapshot
	for _, ns := range r.sess.Namespaces() {
		snaps = append(snaps, snapshot.Take(ns))
	}
	return snapshot.Write(filepath.Join(r.dir, name), snaps)
}

type teeSink struct {
	a trace.Sink
	b *report.JSON
}

func (t teeSink) Packet(p *event.Packet) { t.a.Packet(p); t.b.Packet(p) }
func (t teeSink) Flow(f *event.Flow)     { t.a.Flow(f); t.b.Flow(f) }

// tee writes the session header now and everything after it to the
// recording as well.
func (r *recording) tee(sink trace.Sink, stats func(event.Stats)) (trace.Sink, func(event.Stats)) {
	r.json.Session(r.sess.Info())
	return teeSink{sink, r.json}, func(s event.Stats) {
		stats(s)
		r.json.Stats(s)
	}
}

// finish snapshots the namespaces after the trace rules are gone.
func (r *recording) finish() error {
	if err := r.stream.Sync(); err != nil {
		return err
	}
	return r.snapshot(recEnvEnd)
}

func (r *recording) close() { r.stream.Close() }
