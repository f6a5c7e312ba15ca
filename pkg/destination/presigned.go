package destination

// This file reads one object through a presigned GET URL (PresignGet) with net/http alone: a
// restore step holding such a URL holds no bucket keys, so it has no S3 client to sign with.

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// OpenPresigned returns a Reader of the one object that rawURL, a presigned GET URL of the
// object at key (PresignGet), reads. It makes no request. Its Stat and Get accept only key;
// their errors are classified as a Bucket's: an expired or revoked URL is ErrAccessDenied, a
// deleted object ErrObjectNotFound, anything else transient.
func OpenPresigned(rawURL, key string) (Reader, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url's error repeats the URL, a credential: say only what is wrong.
		return nil, fmt.Errorf("presigned URL of %s does not parse", key)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("presigned URL of %s: want http(s)://host/…, got scheme %q", key, u.Scheme)
	}
	if u.Query().Get("X-Amz-Signature") == "" {
		return nil, fmt.Errorf("presigned URL of %s carries no X-Amz-Signature", key)
	}
	return &presigned{url: u.String(), host: u.Host, key: key, client: &http.Client{Transport: presignTransport}}, nil
}

// presignTransport bounds the wait for a response's headers: a blackholed endpoint fails the
// request instead of holding it (the body's own stalls are the caller's to bound).
var presignTransport = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = time.Minute
	return t
}()

type presigned struct {
	url, host, key string
	client         *http.Client
}

// Stat reads the object's headers with a GET of its first byte: the URL is signed for GET
// only, so a HEAD is refused.
func (p *presigned) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	resp, err := p.do(ctx, key, "stat", "bytes=0-0")
	if err != nil {
		return ObjectInfo{}, err
	}
	resp.Body.Close()
	info := p.info(resp)
	switch resp.StatusCode {
	case http.StatusRequestedRangeNotSatisfiable: // an empty object
		info.Size = 0
	case http.StatusPartialContent:
		// "bytes 0-0/<size>"
		_, total, _ := strings.Cut(resp.Header.Get("Content-Range"), "/")
		if info.Size, err = strconv.ParseInt(total, 10, 64); err != nil {
			return ObjectInfo{}, fmt.Errorf("stat %s through its presigned URL at %s: Content-Range %q", key, p.host,
				resp.Header.Get("Content-Range"))
		}
	}
	return info, nil
}

func (p *presigned) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	resp, err := p.do(ctx, key, "get", "")
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	return resp.Body, p.info(resp), nil
}

// do sends the GET, with a Range when rng is set, and classifies a refusal; a response it
// returns has a body to close.
func (p *presigned) do(ctx context.Context, key, op, rng string) (*http.Response, error) {
	if key != p.key {
		return nil, fmt.Errorf("%s %s: the presigned URL reads %s only", op, key, p.key)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err == nil {
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		var resp *http.Response
		if resp, err = p.client.Do(req); err == nil {
			return p.refused(resp, op, key)
		}
	}
	// A url.Error names the URL, signature and all: keep only its cause.
	if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
		err = uerr.Err
	}
	return nil, fmt.Errorf("%s %s through its presigned URL at %s: %w", op, key, p.host, err)
}

// refused returns resp when the store served it, and S3's refusal in resp, classified, when
// it did not.
func (p *presigned) refused(resp *http.Response, op, key string) (*http.Response, error) {
	if resp.StatusCode < 300 || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		return resp, nil
	}
	defer resp.Body.Close()
	var e struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	_ = xml.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	why := fmt.Sprintf("%s (HTTP %d)", strings.TrimSpace(e.Code+" "+e.Message), resp.StatusCode)
	switch {
	case e.Code == "NoSuchBucket":
		return nil, describe(ErrBucketNotFound, "%s %s through its presigned URL at %s: %s", op, key, p.host, why)
	case resp.StatusCode == http.StatusNotFound:
		return nil, describe(ErrObjectNotFound, "%s %s through its presigned URL at %s: %s", op, key, p.host, why)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return nil, describe(ErrAccessDenied, "%s %s: the store refused its presigned URL at %s (expired, or its keys "+
			"revoked): %s", op, key, p.host, why)
	}
	return nil, fmt.Errorf("%s %s through its presigned URL at %s: %s", op, key, p.host, why)
}

// info is the object's description in resp's headers: user metadata in X-Amz-Meta-*.
func (p *presigned) info(resp *http.Response) ObjectInfo {
	info := ObjectInfo{Key: p.key, Size: resp.ContentLength, Metadata: map[string]string{}}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		info.LastModified = t
	}
	for k, v := range resp.Header {
		if name, ok := strings.CutPrefix(k, "X-Amz-Meta-"); ok && len(v) > 0 && name != "" {
			info.Metadata[name] = v[0]
		}
	}
	return info
}
