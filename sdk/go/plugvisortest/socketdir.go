package plugvisortest

import (
	"os"
	"testing"
)

// SocketDir returns a new, short directory for a plugin's unix socket
// (PLUGIN_UNIX_SOCKET_DIR), removed when the test ends.
//
// A socket's path must fit in 107 bytes. t.TempDir() names its directory
// after the test, so a long test or subtest name under a TMPDIR of a few
// dozen bytes makes go-plugin's bind fail with "invalid argument".
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pvsock-")
	if err != nil {
		t.Fatalf("plugvisortest: making a socket directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
