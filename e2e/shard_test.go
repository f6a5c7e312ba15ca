package e2e

import (
	"fmt"
	"regexp"
	"testing"
)

// Every test of the package runs in exactly one shard, whatever their number; a shard's
// pattern matches its tests' names whole (TestX does not run TestXY too).
func TestShardsRunEveryTestOnce(t *testing.T) {
	tests, err := testNames(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(tests) < 50 {
		t.Fatalf("%d tests found in the package's files, want its 50 and more", len(tests))
	}
	for n := 1; n <= 4; n++ {
		runs := map[string]int{}
		for i := 1; i <= n; i++ {
			pattern, err := shardRunOf(fmt.Sprintf("%d/%d", i, n), tests)
			if err != nil {
				t.Fatal(err)
			}
			re := regexp.MustCompile(pattern)
			for _, test := range tests {
				if re.MatchString(test) {
					runs[test]++
				}
			}
			if re.MatchString(tests[0] + "X") {
				t.Fatalf("shard %d/%d's pattern %s matches a name that only begins with %s", i, n, pattern, tests[0])
			}
		}
		for _, test := range tests {
			if runs[test] != 1 {
				t.Fatalf("with %d shards, %s runs %d times", n, test, runs[test])
			}
		}
	}
	if _, err := shardRunOf("3/2", tests); err == nil {
		t.Fatal("shard 3/2 accepted")
	}
}
