package report

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nattrace/nattrace/event"
)

func stream(t *testing.T) []byte {
	var b bytes.Buffer
	j := NewJSON(&b)
	j.Session(event.Session{Type: "session", Version: 1, ID: "abc"})
	j.Packet(samplePacket())
	j.Flow(&event.Flow{Type: "flow", ID: 1, NAT: []string{"dnat"}})
	j.Stats(event.Stats{Type: "stats", Packets: 1})
	return b.Bytes()
}

func TestReadStream(t *testing.T) {
	rec, err := ReadStream(bytes.NewReader(stream(t)))
	if err != nil || rec.Session.ID != "abc" || len(rec.Packets) != 1 || len(rec.Flows) != 1 || rec.Stats == nil ||
		rec.Packets[0].Drop.Rule != "-A FORWARD -p tcp -m tcp --dport 8080 -j DROP" {
		t.Fatalf("%+v %v", rec, err)
	}
}

func TestLoadRecordingErrors(t *testing.T) {
	good := stream(t)
	cases := map[string]func(dir string){
		"no such recording directory":       func(dir string) { os.RemoveAll(dir) },
		"missing: not a nattrace recording": func(dir string) {},
		"truncated": func(dir string) {
			os.WriteFile(filepath.Join(dir, "session.jsonl"), good[:len(good)-20], 0o600)
		},
		"not JSON": func(dir string) {
			os.WriteFile(filepath.Join(dir, "session.jsonl"), append([]byte("{\"type\":\"session\",\"version\":1}\n{garbage\n"), good...), 0o600)
		},
		"want the session object": func(dir string) {
			os.WriteFile(filepath.Join(dir, "session.jsonl"), []byte("{\"type\":\"packet\"}\n"), 0o600)
		},
		"env-start.json: corrupt": func(dir string) {
			os.WriteFile(filepath.Join(dir, "session.jsonl"), good, 0o600)
			os.WriteFile(filepath.Join(dir, "env-start.json"), []byte("[{"), 0o600)
		},
		"empty: no session object": func(dir string) {
			os.WriteFile(filepath.Join(dir, "session.jsonl"), nil, 0o600)
		},
	}
	for want, setup := range cases {
		dir := filepath.Join(t.TempDir(), "rec")
		os.MkdirAll(dir, 0o700)
		setup(dir)
		_, err := LoadRecording(dir)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", want, err)
		}
	}
}

func FuzzReadStream(f *testing.F) {
	f.Add(stream(&testing.T{}))
	f.Add([]byte("{\"type\":\"session\",\"version\":1}\n{\"type\":\"packet\",\"steps\":[{\"kind\":\"nat\"}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, _ := ReadStream(bytes.NewReader(b))
		if rec == nil {
			t.Fatal("nil recording")
		}
	})
}
