package configfile

import "time"

// These types stand for a role's Config in the tests: every kind of field
// a config file holds.

// testConfig is a role's config.
type testConfig struct {
	// Name is the node's name.
	Name string `json:"name" config:"alias=id|node_id,default=the host name"`
	// DataDir holds the node's state; Name names it.
	DataDir string `json:"data" config:"alias=data_dir"`
	// Workers per stream.
	Workers int `json:"workers"`
	// Verbose logs more.
	Verbose bool `json:"verbose"`
	// Poll is how often to look again.
	Poll time.Duration `json:"poll"`
	// Limit caps a volume.
	Limit int64 `json:"limit" config:"size"`
	// Tuning is a Raft knob.
	Tuning uint64 `json:"tuning"`
	// Auth is the NATS credential.
	Auth testAuth `json:"nats_auth" config:"inline=nats_"`
	// Tags are words.
	Tags []string `json:"tags"`
	// Pools are disk pools.
	Pools []testPool `json:"pools" config:"flag=pool"`
	// Lib is one library.
	Lib *testLib `json:"lib" config:"fileonly"`
}

// testAuth is an inline group.
type testAuth struct {
	// CA verifies the server.
	CA string `json:"ca" config:"alias=ca_file"`
	// User is a name.
	User string `json:"user"`
}

// testPool is an element of a list.
type testPool struct {
	// Name of the pool.
	Name string `json:"name"`
	// Dir holds the volumes.
	Dir string `json:"dir"`
	// VolumeSize caps each volume.
	VolumeSize int64 `json:"volume_size" config:"size,alias=max_volume_bytes"`
}

// testLib holds a pointer to a struct.
type testLib struct {
	// Name of the library.
	Name string `json:"name"`
	// Timeout bounds a move.
	Timeout time.Duration `json:"timeout"`
	// Emulated makes it emulated.
	Emulated *testEmulated `json:"emulated"`
}

// testEmulated is nested two deep.
type testEmulated struct {
	// Slots of the library.
	Slots int `json:"slots"`
}

// testRole are the fields every role's file has.
type testRole struct {
	// LogLevel is debug or info.
	LogLevel string `json:"log_level"`
}

func testDefaults() testConfig {
	return testConfig{Name: "host", Workers: 2, Poll: 30 * time.Second}
}
