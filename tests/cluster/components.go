package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"

	// kubectl reads kubeconfigs with exec and OIDC credential plugins.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

// nodeComponent says which component a call of the binary is for: its first argument, or the
// name it was called by (a link named kubectl).
func nodeComponent(argv []string) (string, []string, bool) {
	known := map[string]bool{"kubelet": true, "kube-proxy": true, "kubectl": true, "kstatus": true}
	if name := filepath.Base(argv[0]); known[name] {
		return name, argv[1:], true
	}
	if len(argv) > 1 && known[argv[1]] {
		return argv[1], argv[2:], true
	}
	return "", nil, false
}

// runComponent runs one component exactly as its own release binary would.
func runComponent(component string, args []string) int {
	var command *cobra.Command
	switch component {
	case "kubelet":
		command = kubeletapp.NewKubeletCommand(context.Background())
	case "kube-proxy":
		command = proxyapp.NewProxyCommand()
	case "kstatus":
		return runKstatus(os.Stdin, os.Stdout)
	case "kubectl":
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(append([]string{"kubectl"}, args...))) //nolint:errcheck
		command = kubectlcmd.NewDefaultKubectlCommand()
		command.SetArgs(args)
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	}
	command.SetArgs(args)
	os.Args = append([]string{component}, args...)
	return cli.Run(command)
}
