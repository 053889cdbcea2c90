package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShardChangedOnDisk replaces a shard after start-up with other bytes of
// the same size, by rename and in place: the server must refuse it, naming
// the file, rather than serve new bytes under the old immutable ETag; put
// back, it is served again.
func TestShardChangedOnDisk(t *testing.T) {
	for _, how := range []string{"renamed over", "rewritten in place", "before the first request"} {
		t.Run(how, func(t *testing.T) {
			dir := copyModel(t, testModelDirs[0], "cai-tiny")
			shard, data := firstShard(t, dir)
			path := filepath.Join(dir, shard)
			logs := &logBuffer{}
			_, hs := newTestServer(t, Config{Models: []string{dir}, Logf: logs.logf})
			url := "/models/cai-tiny/" + shard
			if how != "before the first request" {
				if resp, body := do(t, hs, "GET", url, nil); resp.StatusCode != 200 || !bytes.Equal(body, data) {
					t.Fatalf("status %d before the change", resp.StatusCode)
				}
			}
			forged := bytes.Clone(data)
			forged[len(forged)/3] ^= 0xff
			time.Sleep(10 * time.Millisecond) // a visibly later mtime
			switch how {
			case "renamed over", "before the first request":
				tmp := path + ".new"
				if err := os.WriteFile(tmp, forged, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, path); err != nil {
					t.Fatal(err)
				}
			case "rewritten in place":
				f, err := os.OpenFile(path, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(forged, 0)
				f.Close()
			}
			resp, body := do(t, hs, "GET", url, nil)
			if resp.StatusCode != 500 || bytes.Contains(body, forged[:64]) || !strings.Contains(string(body), shard) {
				t.Errorf("changed shard: status %d, body %.120q; want a 500 naming %s", resp.StatusCode, body, shard)
			}
			if !strings.Contains(logs.String(), shard) {
				t.Errorf("log does not name the shard: %s", logs)
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if resp, body := do(t, hs, "GET", url, map[string]string{"Range": "bytes=0-99"}); resp.StatusCode != 206 || !bytes.Equal(body, data[:100]) {
				t.Errorf("restored shard: status %d", resp.StatusCode)
			}
		})
	}
}
