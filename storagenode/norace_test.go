//go:build !race

package storagenode

const raceEnabled = false
