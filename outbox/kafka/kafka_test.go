package kafka

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scimgate/scimgate/outbox"
)

// The delivery tests, through the dispatcher and an in-process cluster, are
// the engine's (outbox/stream_kafka_test.go); these look inside the sender.

const testTopic = "scimgate-events"

// TestKafkaClassify checks the classification of broker answers the other
// tests do not provoke.
func TestKafkaClassify(t *testing.T) {
	snd, err := New(outbox.Target{Name: "app", Type: outbox.TypeKafka, Kafka: &outbox.KafkaConfig{Brokers: []string{"127.0.0.1:1"}, Topic: testTopic, CreateTopic: true}})
	if err != nil {
		t.Fatal(err)
	}
	s := snd.(*kafkaSender)
	defer s.Close()
	rec := &kgo.Record{Topic: testTopic, Key: []byte("User/u1"), Value: []byte(`{}`)}
	for _, tc := range []struct {
		err    error
		reason string
		class  string
	}{
		{kerr.NotLeaderForPartition, outbox.ReasonLeader, "retry"},
		{kerr.NotEnoughReplicas, outbox.ReasonLeader, "retry"},
		{kerr.TopicAuthorizationFailed, outbox.ReasonAuth, "pause"},
		{kerr.ClusterAuthorizationFailed, outbox.ReasonAuth, "pause"},
		{kerr.SaslAuthenticationFailed, outbox.ReasonAuth, "pause"},
		{kerr.InvalidRecord, outbox.ReasonRejected, "permanent"},
		{kerr.UnknownTopicOrPartition, outbox.ReasonMissing, "retry"},
		{kerr.PolicyViolation, outbox.ReasonRejected, "retry"},
		{context.DeadlineExceeded, outbox.ReasonTimeout, "retry"},
		{kgo.ErrClientClosed, outbox.ReasonUnavailable, "retry"},
	} {
		got := s.classify(t.Context(), tc.err, rec, time.Now())
		var se *outbox.StreamError
		if !errors.As(got, &se) || se.Reason != tc.reason || !errors.Is(got, tc.err) {
			t.Errorf("classify(%v) = %v, want reason %s wrapping it", tc.err, got, tc.reason)
			continue
		}
		class := "retry"
		if outbox.IsPermanent(got) {
			class = "permanent"
		} else if outbox.IsPauseTarget(got) {
			class = "pause"
		}
		if class != tc.class {
			t.Errorf("classify(%v) = %v: %s, want %s", tc.err, got, class, tc.class)
		}
	}
}

// TestKafkaKey: a record is keyed by its event's primary resource, or by
// the first part of its type for an event about no resource.
func TestKafkaKey(t *testing.T) {
	if got := kafkaKey(outbox.Event{Type: "user.created", Resources: []string{"User/u1", "Group/g1"}}); string(got) != "User/u1" {
		t.Errorf("key = %q, want User/u1", got)
	}
	if got := kafkaKey(outbox.Event{Type: "snapshot.completed"}); string(got) != "snapshot" {
		t.Errorf("key of an event about no resource = %q, want snapshot", got)
	}
}

// TestKafkaMissingWording: a missing topic tells the
// operator to set create_topic only when it is not set.
func TestKafkaMissingWording(t *testing.T) {
	for _, create := range []bool{false, true} {
		snd, err := New(outbox.Target{Name: "app", Type: outbox.TypeKafka, Kafka: &outbox.KafkaConfig{Brokers: []string{"127.0.0.1:1"}, Topic: testTopic, CreateTopic: create}})
		if err != nil {
			t.Fatal(err)
		}
		s := snd.(*kafkaSender)
		for _, cause := range []error{kerr.UnknownTopicOrPartition, kerr.UnknownTopicID} {
			got := s.classify(t.Context(), cause, &kgo.Record{Topic: testTopic}, time.Now())
			var se *outbox.StreamError
			if !errors.As(got, &se) || se.Reason != outbox.ReasonMissing || outbox.IsPermanent(got) || outbox.IsPauseTarget(got) {
				t.Errorf("create_topic=%v: classify(%v) = %v, want a retried %s", create, cause, got, outbox.ReasonMissing)
			}
			if advises := strings.Contains(got.Error(), "set kafka.create_topic: true"); advises == create {
				t.Errorf("create_topic=%v: %q", create, got)
			}
		}
		_ = s.Close()
	}
}
