package bus

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Decode unmarshals data into m. JSON (protojson) is used when contentType says so or, with no
// content type, when the body starts with '{'; binary protobuf otherwise. It never panics on
// bad input; the error says what could not be read.
func Decode(data []byte, contentType string, m proto.Message) error {
	if IsJSON(data, contentType) {
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
			return fmt.Errorf("decode %s as json: %w", m.ProtoReflect().Descriptor().Name(), err)
		}
		return nil
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("decode %s as protobuf: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return nil
}

// IsJSON reports whether a body is protojson: by content type, else by its first byte.
func IsJSON(data []byte, contentType string) bool {
	switch {
	case strings.HasPrefix(contentType, ContentTypeJSON):
		return true
	case strings.HasPrefix(contentType, ContentTypeProtobuf):
		return false
	}
	trimmed := strings.TrimLeft(string(data[:min(len(data), 64)]), " \t\r\n")
	return strings.HasPrefix(trimmed, "{") || len(data) == 0
}

// Encode marshals m as protobuf, or as protojson when json is set, and returns the content type.
func Encode(m proto.Message, json bool) ([]byte, string, error) {
	if json {
		b, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(m)
		return b, ContentTypeJSON, err
	}
	b, err := proto.Marshal(m)
	return b, ContentTypeProtobuf, err
}

// Publish publishes m as protobuf on subject with Nats-Msg-Id msgID (no dedup if empty) and
// waits for the stream's acknowledgement. duplicate reports that the stream already held a
// message with that id (within its Duplicates window) and dropped this one.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string,
	m proto.Message) (duplicate bool, err error) {
	return publish(ctx, js, subject, msgID, m, false)
}

func publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, m proto.Message,
	json bool) (bool, error) {
	data, ct, err := Encode(m, json)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(HeaderContentType, ct)
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return false, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack.Duplicate, nil
}
