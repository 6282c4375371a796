// Package packaging holds no code: it is the Debian package of Cairn, built
// by 'make deb' (build-deb.sh, nfpm.yaml), and the tests that build it,
// look inside it, install it on this machine with dpkg, use it and remove it
// again.
//
//   - systemd/: one unit per role. The server and the storage node run as the
//     user cairn (sysusers.d/cairn.conf) with the system read-only but for
//     their state directories; the agent runs as root, since it reads and
//     restores every file.
//   - etc/: the commented example configuration of each role, installed in
//     /etc/cairn as conffiles and read by its unit: what 'cairn config
//     example --role ROLE' prints, written by 'go generate ./cmd/cairn'
//     (cmd/cairn's TestPackagedConfigExamples holds them to it, and
//     'cairn config check' accepts each).
//   - debian/: the maintainer scripts: the user, the configuration files'
//     group, systemd told of the units. No unit is enabled, and nothing in
//     /var/lib/cairn is removed, even on purge.
//
// The man pages and the bash completion are generated from the binary's
// command tree at build time ('cairn man', 'cairn completion bash'); the
// version is scripts/version.sh's, stamped into the binary and carried by
// the package.
package packaging
