package backupformat

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// kubeLike is about size bytes shaped like the benchmark's etcd data (e2e/bench): 32 KiB
// objects of 8 KiB random base64 (secrets, certificates) and 24 KiB of repetitive lines.
func kubeLike(size int) []byte {
	var sb strings.Builder
	for i := 0; sb.Len() < size; i++ {
		secret := make([]byte, 6<<10)
		_, _ = rand.Read(secret)
		sb.WriteString(`{"kind":"ConfigMap","data":{"certificate":"`)
		sb.WriteString(base64.StdEncoding.EncodeToString(secret))
		sb.WriteString(`","config":"`)
		for j := 0; j < 700; j++ {
			fmt.Fprintf(&sb, "setting-%d=value-%d-of-configmap-%d\\n", j, j*7%13, i%50)
		}
		sb.WriteString(`"}}`)
	}
	return []byte(sb.String()[:size])
}

// BenchmarkWriter compresses 64 MiB of Kubernetes-like data at each level and encoder
// concurrency: the snapshotter's compressor, which etcd's stream (about 140-400 MB/s here)
// must not wait for. Reports throughput and the compressed size's ratio to the input.
func BenchmarkWriter(b *testing.B) {
	data := kubeLike(64 << 20)
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
		for _, conc := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads-%d", level, conc), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				var size int64
				for range b.N {
					w, err := NewWriter(io.Discard, level, conc)
					if err != nil {
						b.Fatal(err)
					}
					for off := 0; off < len(data); off += 32 << 10 { // etcd's client hands over 32 KiB at a time
						if _, err := w.Write(data[off:min(off+32<<10, len(data))]); err != nil {
							b.Fatal(err)
						}
					}
					if err := w.Close(); err != nil {
						b.Fatal(err)
					}
					size = w.Size()
				}
				b.ReportMetric(float64(size)/float64(len(data)), "ratio")
			})
		}
	}
}
