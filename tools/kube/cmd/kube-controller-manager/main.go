// Command kube-controller-manager is the upstream Kubernetes controller manager, built from the
// Go module proxy in the same build as kube-apiserver, so that tests and the sandbox run real
// controllers (garbage collector, namespace, PVC protection) without Docker or downloads.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
