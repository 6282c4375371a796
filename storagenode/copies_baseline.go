//go:build cairn_copybaseline

package storagenode

const copyBaseline = true
