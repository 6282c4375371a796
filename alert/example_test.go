package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/cairnbackup/cairn/alert"
)

// The leader makes an event where it sees the condition and hands it to
// its Dispatcher; a webhook receives the JSON.
func Example() {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e alert.Event
		_ = json.NewDecoder(r.Body).Decode(&e)
		fmt.Printf("%s: %s\n", e.Kind, e.Summary)
	}))
	defer receiver.Close()

	d, err := alert.New(alert.Config{
		Webhooks: []alert.WebhookConfig{{Name: "ops", URL: receiver.URL}},
	}, alert.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	lastGood := now.Add(-51 * time.Hour)
	_, _ = d.Send(alert.NewRPOBreach(now, "web1", "nightly", lastGood, 24*time.Hour))
	// The same condition again within the repeat interval (by the
	// Dispatcher's clock): held back.
	queued, _ := d.Send(alert.NewRPOBreach(now, "web1", "nightly", lastGood, 24*time.Hour))

	// Close delivers what is queued before it returns.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("second breach queued:", queued)
	// Output:
	// rpo_breach: RPO breach: client web1's last good restore point (policy nightly) is 2d3h old, target 1d
	// second breach queued: false
}
