package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

type urlT = url.URL

var metav1GetOptions = metav1.GetOptions{}

func mustURL(raw string) urlT {
	parsed, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return *parsed
}

// pkiFiles are the paths of a cluster's certificates and keys. They are made once per --dir and
// reused, so a kubeconfig written by an earlier start keeps working after a restart.
type pkiFiles struct {
	dir                  string
	caCert, caKey        string
	servingCert          string
	servingKey           string
	adminCert, adminKey  string
	controllerCert       string
	controllerKey        string
	schedulerCert        string
	schedulerKey         string
	nodeCert, nodeKey    string
	proxyCert, proxyKey  string
	serviceAccountKey    string
	serviceAccountPublic string
}

func ensurePKI(dir, serviceIPRange, nodeName string) (*pkiFiles, error) {
	files := &pkiFiles{
		dir:                  dir,
		caCert:               filepath.Join(dir, "ca.crt"),
		caKey:                filepath.Join(dir, "ca.key"),
		servingCert:          filepath.Join(dir, "apiserver.crt"),
		servingKey:           filepath.Join(dir, "apiserver.key"),
		adminCert:            filepath.Join(dir, "admin.crt"),
		adminKey:             filepath.Join(dir, "admin.key"),
		controllerCert:       filepath.Join(dir, "controller-manager.crt"),
		controllerKey:        filepath.Join(dir, "controller-manager.key"),
		schedulerCert:        filepath.Join(dir, "scheduler.crt"),
		schedulerKey:         filepath.Join(dir, "scheduler.key"),
		nodeCert:             filepath.Join(dir, "node.crt"),
		nodeKey:              filepath.Join(dir, "node.key"),
		proxyCert:            filepath.Join(dir, "kube-proxy.crt"),
		proxyKey:             filepath.Join(dir, "kube-proxy.key"),
		serviceAccountKey:    filepath.Join(dir, "sa.key"),
		serviceAccountPublic: filepath.Join(dir, "sa.pub"),
	}
	if _, err := os.Stat(files.serviceAccountPublic); err == nil {
		return files, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}

	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "modelyard-test-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if err := writeCert(files.caCert, caDER); err != nil {
		return nil, err
	}
	if err := writeKey(files.caKey, caKey); err != nil {
		return nil, err
	}

	_, serviceNet, err := net.ParseCIDR(serviceIPRange)
	if err != nil {
		return nil, fmt.Errorf("--service-cluster-ip-range: %w", err)
	}
	firstServiceIP := make(net.IP, len(serviceNet.IP))
	copy(firstServiceIP, serviceNet.IP)
	firstServiceIP[len(firstServiceIP)-1]++

	serving := &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), firstServiceIP},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if err := issue(files.servingCert, files.servingKey, serving, ca, caKey, 2); err != nil {
		return nil, err
	}
	admin := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "modelyard-test-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(files.adminCert, files.adminKey, admin, ca, caKey, 3); err != nil {
		return nil, err
	}
	// The controller manager runs as the identity its built-in RBAC role is bound to, as in a
	// kubeadm cluster; it is not an administrator.
	controller := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "system:kube-controller-manager"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(files.controllerCert, files.controllerKey, controller, ca, caKey, 4); err != nil {
		return nil, err
	}

	// The scheduler, the kubelet and kube-proxy too, each as the user the built-in policy
	// binds its role to (the kubelet is authorised by the Node authorizer as its node).
	components := []*x509.Certificate{
		{Subject: pkix.Name{CommonName: "system:kube-scheduler"}},
		{Subject: pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}}},
		{Subject: pkix.Name{CommonName: "system:kube-proxy"}},
	}
	paths := [][2]string{
		{files.schedulerCert, files.schedulerKey},
		{files.nodeCert, files.nodeKey},
		{files.proxyCert, files.proxyKey},
	}
	for i, template := range components {
		template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if err := issue(paths[i][0], paths[i][1], template, ca, caKey, int64(5+i)); err != nil {
			return nil, err
		}
	}

	serviceAccountKey, err := newKey()
	if err != nil {
		return nil, err
	}
	if err := writeKey(files.serviceAccountKey, serviceAccountKey); err != nil {
		return nil, err
	}
	publicDER, err := x509.MarshalPKIXPublicKey(serviceAccountKey.Public())
	if err != nil {
		return nil, err
	}
	// Written last: its presence means the whole set exists.
	return files, os.WriteFile(files.serviceAccountPublic, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: publicDER}), 0o600)
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func issue(certPath, keyPath string, template, ca *x509.Certificate, caKey crypto.Signer, serial int64) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	template.SerialNumber = big.NewInt(serial)
	template.NotBefore = ca.NotBefore
	template.NotAfter = ca.NotAfter
	template.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, template, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writeCert(certPath, der); err != nil {
		return err
	}
	return writeKey(keyPath, key)
}

func writeCert(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// writeKubeconfig embeds the certificates, so the file can be copied or read by any client.
func writeKubeconfig(path, context, server, caPath, certPath, keyPath string) error {
	ca, err := os.ReadFile(caPath)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(certPath)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	config := clientcmdapi.NewConfig()
	config.Clusters[context] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	config.AuthInfos[context] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	config.Contexts[context] = &clientcmdapi.Context{Cluster: context, AuthInfo: context, Namespace: "default"}
	config.CurrentContext = context
	return clientcmd.WriteToFile(*config, path)
}
