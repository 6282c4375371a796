// Command show prints what package buildinfo says of its own build, for
// buildinfo's tests, which build it with and without a link-time stamp.
package main

import (
	"fmt"

	"github.com/cairnbackup/cairn/internal/buildinfo"
)

func main() {
	fmt.Println(buildinfo.Version(), buildinfo.Commit())
}
