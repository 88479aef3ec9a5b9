// Command testcluster runs a real Kubernetes control plane on loopback for modelyard's tests:
// embedded etcd, kube-apiserver and kube-controller-manager in one process, from the release
// pinned in go.mod.
//
// It exists because the only judge of a CRD, a CEL rule, server-side apply, RBAC or garbage
// collection is Kubernetes itself: validators that imitate the API server passed CRDs the server
// refused. There is no scheduler and no kubelet: pods stay Pending until a test writes their
// status, which is how the tests play the kubelet.
//
// When the API server is ready it writes an admin kubeconfig (a client certificate in
// system:masters) into --dir and prints one JSON line on stdout with its path, the server URL and
// the Kubernetes version; then it serves until SIGINT or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/version"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// defaultControllers are the controllers a test of an operator relies on: Deployments become
// ReplicaSets become Pods (and their status follows the pods), owner references collect garbage,
// namespaces delete, every namespace gets its default ServiceAccount (pods are refused without
// it), quotas are counted and HPAs report whether they can scale.
var defaultControllers = []string{
	"garbage-collector-controller",
	"deployment-controller",
	"replicaset-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"resourcequota-controller",
	"horizontal-pod-autoscaler-controller",
	// For a node: kube-proxy routes a Service to the pods its EndpointSlices list; a new node's
	// not-ready taint is lifted once it is Ready; pods mount the cluster's CA from each
	// namespace's kube-root-ca.crt ConfigMap.
	"endpointslice-controller",
	"node-lifecycle-controller",
	"root-ca-certificate-publisher-controller",
	// Every real cluster runs it: the rules of a ClusterRole labelled to aggregate into
	// view/edit/admin are copied into those roles, so without it "edit" grants nothing here.
	"clusterrole-aggregation-controller",
}

type settings struct {
	dir               string
	port              int
	serviceIPRange    string
	controllers       string
	etcdFsync         bool
	logFile           string
	hpaSyncPeriod     time.Duration
	apiserverExtra    multiFlag
	controllerExtra   multiFlag
	kubeconfigContext string
	scheduler         bool
	nodeName          string
}

// errorOutput is where our own failures go: the real stderr, once klog's output is redirected.
var errorOutput io.Writer = os.Stderr

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type readyLine struct {
	Kubeconfig string `json:"kubeconfig"`
	// Kubeconfigs of the node's components, each with its own identity.
	NodeKubeconfig  string `json:"nodeKubeconfig"`
	ProxyKubeconfig string `json:"proxyKubeconfig"`
	NodeName        string `json:"nodeName"`
	Server          string `json:"server"`
	Version         string `json:"version"`
	Dir             string `json:"dir"`
	PID             int    `json:"pid"`
}

func main() {
	if component, args, ok := nodeComponent(os.Args); ok {
		os.Exit(runComponent(component, args))
	}
	var s settings
	flag.StringVar(&s.dir, "dir", "", "state directory (PKI, etcd data, kubeconfigs, log); a new temporary one when empty")
	flag.IntVar(&s.port, "port", 0, "API server port on 127.0.0.1; 0 picks a free one")
	// Inside 198.18.0.0/15 (RFC 2544's benchmarking range), like the node's pods: a ClusterIP is
	// then never an address anywhere else (tests/support/node.py routes it on this machine).
	flag.StringVar(&s.serviceIPRange, "service-cluster-ip-range", "198.19.0.0/16", "Service IP range")
	flag.StringVar(&s.controllers, "controllers", strings.Join(defaultControllers, ","), "kube-controller-manager controllers to run")
	flag.BoolVar(&s.etcdFsync, "etcd-fsync", false, "fsync etcd writes (off: a test cluster needs no durability and a slow disk would dominate every figure)")
	flag.StringVar(&s.logFile, "log-file", "", "where the components log; default DIR/cluster.log")
	flag.DurationVar(&s.hpaSyncPeriod, "hpa-sync-period", 2*time.Second, "how often the HPA controller re-evaluates (15s in a default cluster)")
	flag.Var(&s.apiserverExtra, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--v=2 (repeatable)")
	flag.Var(&s.controllerExtra, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	flag.StringVar(&s.kubeconfigContext, "context", "modelyard-test", "context name in the written kubeconfig")
	flag.BoolVar(&s.scheduler, "scheduler", false, "also run kube-scheduler (only with a node: without one it marks every pod Unschedulable)")
	flag.StringVar(&s.nodeName, "node-name", "modelyard-node", "name of the node whose kubelet identity (system:node:NAME) is issued")
	flag.Parse()

	if s.dir == "" {
		dir, err := os.MkdirTemp("", "modelyard-cluster-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "testcluster: %v\n", err)
			os.Exit(1)
		}
		s.dir = dir
	}
	if s.logFile == "" {
		s.logFile = filepath.Join(s.dir, "cluster.log")
	}
	if err := run(s); err != nil {
		fmt.Fprintf(errorOutput, "testcluster: %v (log: %s)\n", err, s.logFile)
		os.Exit(1)
	}
}

func run(s settings) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	realStderr, err := setUpLogging(s)
	if err != nil {
		return err
	}
	errorOutput = realStderr

	port := s.port
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return err
		}
	}
	pki, err := ensurePKI(filepath.Join(s.dir, "pki"), s.serviceIPRange, s.nodeName)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcd, etcdURL, err := startEtcd(ctx, filepath.Join(s.dir, "etcd"), s.etcdFsync)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	// One kubeconfig per identity: the admin, and each component as its own user.
	adminKubeconfig := filepath.Join(s.dir, "admin.kubeconfig")
	controllerKubeconfig := filepath.Join(s.dir, "controller-manager.kubeconfig")
	nodeKubeconfig := filepath.Join(s.dir, "node.kubeconfig")
	proxyKubeconfig := filepath.Join(s.dir, "kube-proxy.kubeconfig")
	schedulerKubeconfig := filepath.Join(s.dir, "scheduler.kubeconfig")
	for _, identity := range []struct{ path, context, cert, key string }{
		{adminKubeconfig, s.kubeconfigContext, pki.adminCert, pki.adminKey},
		{controllerKubeconfig, "kube-controller-manager", pki.controllerCert, pki.controllerKey},
		{nodeKubeconfig, "kubelet", pki.nodeCert, pki.nodeKey},
		{proxyKubeconfig, "kube-proxy", pki.proxyCert, pki.proxyKey},
		{schedulerKubeconfig, "kube-scheduler", pki.schedulerCert, pki.schedulerKey},
	} {
		if err := writeKubeconfig(identity.path, identity.context, server, pki.caCert, identity.cert, identity.key); err != nil {
			return err
		}
	}

	apiserverErr := make(chan error, 1)
	go func() { apiserverErr <- runAPIServer(ctx, s, port, etcdURL, pki) }()

	restConfig, err := clientcmd.BuildConfigFromFlags("", adminKubeconfig)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, restConfig, apiserverErr); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}

	controllerErr := make(chan error, 1)
	go func() { controllerErr <- runControllerManager(ctx, s, controllerKubeconfig, pki) }()
	schedulerErr := make(chan error, 1)
	if s.scheduler {
		go func() { schedulerErr <- runScheduler(ctx, schedulerKubeconfig) }()
	}

	line, _ := json.Marshal(readyLine{
		Kubeconfig:      adminKubeconfig,
		NodeKubeconfig:  nodeKubeconfig,
		ProxyKubeconfig: proxyKubeconfig,
		NodeName:        s.nodeName,
		Server:          server,
		Version:         version.Get().GitVersion,
		Dir:             s.dir,
		PID:             os.Getpid(),
	})
	fmt.Println(string(line))

	select {
	case <-ctx.Done():
		return nil
	case err := <-apiserverErr:
		return fmt.Errorf("kube-apiserver stopped: %w", err)
	case err := <-controllerErr:
		return fmt.Errorf("kube-controller-manager stopped: %w", err)
	case err := <-schedulerErr:
		return fmt.Errorf("kube-scheduler stopped: %w", err)
	}
}

// setUpLogging sends everything the components write to stderr (klog, and a panic's stack) to
// one file: stdout carries the JSON line the tests read, and a person reads the log when
// something in the control plane looks wrong. Our own errors still reach the real stderr.
func setUpLogging(s settings) (*os.File, error) {
	// Both components apply logging options; the second must not fail on the first's settings.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	out, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	saved, err := syscall.Dup(int(os.Stderr.Fd()))
	if err != nil {
		return nil, err
	}
	if err := syscall.Dup3(int(out.Fd()), int(os.Stderr.Fd()), 0); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(saved), "stderr"), nil
}

func runAPIServer(ctx context.Context, s settings, port int, etcdURL string, pki *pkiFiles) error {
	opts := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, set := range opts.Flags().FlagSets {
		fs.AddFlagSet(set)
	}
	args := []string{
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--advertise-address=127.0.0.1",
		// The "kubernetes" Service's endpoints would point at loopback, which the reconciler refuses.
		"--endpoint-reconciler-type=none",
		"--etcd-servers=" + etcdURL,
		"--cert-dir=" + pki.dir,
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.serviceAccountPublic,
		"--service-account-signing-key-file=" + pki.serviceAccountKey,
		"--service-cluster-ip-range=" + s.serviceIPRange,
		// As in every production cluster: the Node authorizer for kubelets (a node reads only the
		// Secrets of its own pods), RBAC for everyone else, so an operator that lacks a verb
		// gets a 403 here.
		"--authorization-mode=Node,RBAC",
		// As on OpenShift and other hardened clusters: setting blockOwnerDeletion on a child
		// needs update on the owner's finalizers subresource.
		"--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
		// The kubelet is reached (logs, exec) at the node's address; its serving certificate is
		// its own self-signed one, as on a node without TLS bootstrapping.
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
	}
	args = append(args, s.apiserverExtra...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opts.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	completed, err := opts.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	return apiserverapp.Run(ctx, completed)
}

func runControllerManager(ctx context.Context, s settings, kubeconfig string, pki *pkiFiles) error {
	opts, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	all, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	named := opts.Flags(all, disabled, aliases)
	opts.ParsedFlags = &named
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, set := range named.FlagSets {
		fs.AddFlagSet(set)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + s.controllers,
		"--leader-elect=false",
		// No serving endpoint: nothing scrapes it, and it would need a port.
		"--secure-port=0",
		"--root-ca-file=" + pki.caCert,
		"--service-account-private-key-file=" + pki.serviceAccountKey,
		// Each controller acts as its own service account with its built-in role, as in kubeadm.
		"--use-service-account-credentials=true",
		// The default 20 requests/s would make the control plane, not the operator under test,
		// the bottleneck of a 5,000-Model benchmark.
		"--kube-api-qps=500",
		"--kube-api-burst=1000",
		"--horizontal-pod-autoscaler-sync-period=" + s.hpaSyncPeriod.String(),
	}
	args = append(args, s.controllerExtra...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	config, err := opts.Config(ctx, all, disabled, aliases)
	if err != nil {
		return err
	}
	return kcmapp.Run(ctx, config.Complete())
}

// runScheduler runs kube-scheduler as the identity its built-in RBAC role is bound to.
func runScheduler(ctx context.Context, kubeconfig string) error {
	opts := scheduleroptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, set := range opts.Flags.FlagSets {
		fs.AddFlagSet(set)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		// Its health and metrics endpoint would need a port nothing reads.
		"--secure-port=0",
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	completed, scheduler, err := schedulerapp.Setup(ctx, opts)
	if err != nil {
		return err
	}
	return schedulerapp.Run(ctx, completed, scheduler)
}

// waitReady waits for /readyz and for the default namespace, which is what a client first needs.
func waitReady(ctx context.Context, config *rest.Config, serverErr <-chan error) error {
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-serverErr:
			if err == nil {
				err = errors.New("exited")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		status := 0
		result := client.CoreV1().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&status)
		if status != 200 {
			last = fmt.Errorf("/readyz answered %d: %v", status, result.Error())
			continue
		}
		if _, err := client.CoreV1().Namespaces().Get(ctx, "default", metav1GetOptions); err != nil {
			last = err
			continue
		}
		return nil
	}
	return fmt.Errorf("not ready after 2 minutes: %v", last)
}

func startEtcd(ctx context.Context, dir string, fsync bool) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Name = "modelyard-test"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = !fsync
	clientURL := mustURL(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peerURL := mustURL(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []urlT{clientURL}, []urlT{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []urlT{peerURL}, []urlT{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// A restart of the program on the same --dir keeps the cluster's objects.
	if _, err := os.Stat(filepath.Join(dir, "member")); err == nil {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(time.Minute):
		etcd.Close()
		return nil, "", errors.New("not ready after a minute")
	case <-ctx.Done():
		etcd.Close()
		return nil, "", ctx.Err()
	}
	return etcd, clientURL.String(), nil
}

func freePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}
