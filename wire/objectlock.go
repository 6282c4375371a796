package wire

import (
	"time"

	"github.com/google/uuid"
)

// OpNodeObjectLocks (node order) makes the store keep the objects of a
// volume in a pool that locks (S3 with object lock) as the catalog says:
// retain-until dates extended, legal holds set and lifted.
const OpNodeObjectLocks = "objects.lock"

// ObjectLockOrder is what the store must keep of volume Volume's objects.
// The servers send it after a hold, a release or a commit that changes
// it, to a node that registers, and periodically; the node compares it
// with the objects' state and changes only what differs, so a repeat
// changes nothing.
type ObjectLockOrder struct {
	Pool     string       `json:"pool"`
	Volume   string       `json:"volume"`
	VolumeID uuid.UUID    `json:"volume_id"`
	Objects  []ObjectLock `json:"objects"`
}

// ObjectLock covers the volume's objects that start in [Start, End): the
// label is the object at 0, a backup's part the objects from its
// VolumeStart to its end.
type ObjectLock struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// Until is the date the objects stay locked until at least; a lock
	// that reaches further stays (it is only ever extended). Zero asks
	// for none.
	Until time.Time `json:"until,omitzero"`
	// Hold: the objects are under legal hold, or not.
	Hold bool `json:"hold,omitempty"`
}

// ObjectLockResult says what the node changed in the store.
type ObjectLockResult struct {
	// Objects counts the objects the order covered.
	Objects int `json:"objects"`
	// Extended, Held and Released count the objects whose retain-until
	// date was extended, put under legal hold and taken out of it.
	Extended int `json:"extended,omitempty"`
	Held     int `json:"held,omitempty"`
	Released int `json:"released,omitempty"`
}
