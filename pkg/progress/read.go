package progress

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var (
	percentRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)%\)`)
	membersRE = regexp.MustCompile(`members restored (\d+)/(\d+)`)
	fetchedRE = regexp.MustCompile(`(\d+(?:\.\d+)?) of (\d+(?:\.\d+)?) ([KMG]?i?B)`)
)

// Of reads how far a status message says the work got, for a progress bar: a backup's
// Say ("taking snapshot: 514 of 1100 MiB (46%)"), a restore's "members restored 1/3" and its
// members' "fetched etcd-0 12 of 34 MiB, ...". A restore's members fetch their backup, then
// restore it: the bytes fetched while any member still fetches, then the members restored.
// ok is false when the message says nothing countable.
func Of(msg string) (done, total float64, ok bool) {
	var fetched, fetchedOf float64
	if strings.Contains(msg, "fetched") {
		for _, m := range fetchedRE.FindAllStringSubmatch(msg, -1) {
			d, _ := strconv.ParseFloat(m[1], 64)
			t, _ := strconv.ParseFloat(m[2], 64)
			fetched, fetchedOf = fetched+d, fetchedOf+t
		}
	}
	if m := membersRE.FindStringSubmatch(msg); m != nil {
		if fetchedOf > 0 && fetched < fetchedOf {
			return fetched, fetchedOf, true
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		d, _ := strconv.ParseFloat(m[2], 64)
		if d > 0 {
			return min(n, d), d, true
		}
	}
	if fetchedOf > 0 {
		return min(fetched, fetchedOf), fetchedOf, true
	}
	if m := percentRE.FindStringSubmatch(msg); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		return min(v, 100), 100, true
	}
	return 0, 0, false
}

// Size words n bytes for a person: "836 B", "12.3 KiB", "213.5 MiB", "1.07 GiB".
func Size(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}
