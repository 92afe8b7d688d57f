//go:build linux

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackagedFiles checks the files under packaging/ that the agent's
// behaviour depends on.
func TestPackagedFiles(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("..", "packaging", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	unit := read("systemd/realip-agent.service")
	for _, want := range []string{
		"ExecStart=/usr/bin/realip-agent run -config /etc/realip/agent.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"Type=notify",
		"CapabilityBoundingSet=CAP_SYS_MODULE CAP_NET_ADMIN CAP_BPF CAP_PERFMON CAP_NET_BIND_SERVICE",
		"ProtectSystem=strict",
		"NoNewPrivileges=yes",
		"SystemCallFilter=@system-service @module bpf",
		"ReadWritePaths=-/sys/fs/bpf/realip",
		"ExecStartPre=-+/bin/mkdir -p -m 0700 /sys/fs/bpf/realip",
		"LimitMEMLOCK=infinity",
		"RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
	} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	// Directives that would stop finit_module, the netlink push, or the
	// eBPF receiver's attaching to the host's cgroups.
	for _, bad := range []string{"ProtectKernelModules=yes", "PrivateNetwork=yes", "PrivateUsers=yes", "DynamicUser=yes", "PrivateBPF=yes"} {
		if strings.Contains(unit, "\n"+bad) {
			t.Errorf("unit has %q, which breaks loading or configuring the module", bad)
		}
	}
	if got := strings.TrimSpace(lastLine(read("config/modules-load.d/toa.conf"))); got != "toa" {
		t.Errorf("modules-load.d entry %q", got)
	}
	if got := lastLine(read("config/modprobe.d/toa.conf")); !strings.HasPrefix(got, "options toa ") {
		t.Errorf("modprobe.d: %q", got)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
