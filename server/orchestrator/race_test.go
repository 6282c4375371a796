//go:build race

package orchestrator

// raceEnabled scales down the tests whose size is their point: the race
// detector slows them tenfold and learns nothing more from a larger loop
// in one goroutine.
const raceEnabled = true
