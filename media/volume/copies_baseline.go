//go:build cairn_copybaseline

package volume

const copyBaseline = true
