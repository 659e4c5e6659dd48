package plugin

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// config parses the network config with parse. A bad config is logged to the
// Plugin's logger, as there is no logFile to log to.
func (p *Plugin) config(cmd string, parse func([]byte) (netconf.Config, error), data []byte) (netconf.Config, error) {
	cfg, err := parse(data)
	if err != nil {
		p.log.Error("bad network config", "cmd", cmd, "error", err)
	}
	return cfg, err
}

// commandLogger returns the logger for one command: JSON lines at info level
// appended to cfg.LogFile when set, else the Plugin's logger. The returned
// func closes the log file.
func (p *Plugin) commandLogger(cfg netconf.Config, cmd string, args *skel.CmdArgs) (*slog.Logger, func()) {
	log, done := p.log, func() {}
	if cfg.LogFile != "" {
		f, err := openLogFile(cfg.LogFile)
		if err != nil {
			p.log.Warn("cannot open log file, logging to stderr", "logFile", cfg.LogFile, "error", err)
		} else {
			log = slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
			done = func() { _ = f.Close() }
		}
	}
	attrs := []any{"cmd", cmd}
	if args.ContainerID != "" {
		attrs = append(attrs, "containerID", args.ContainerID, "ifname", args.IfName)
	}
	if args.Netns != "" {
		attrs = append(attrs, "netns", args.Netns)
	}
	if ns, name := podRef(args.Args); name != "" {
		attrs = append(attrs, "pod", ns+"/"+name)
	}
	return log.With(attrs...), done
}

func openLogFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// podRef returns the Kubernetes pod namespace and name from CNI_ARGS
// ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;..."), if the runtime sent them.
func podRef(cniArgs string) (namespace, name string) {
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	return namespace, name
}
