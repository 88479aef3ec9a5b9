package main

// kstatus: what Flux (and `kubectl wait`-style tools built on cli-utils) conclude about an
// object, computed by the real library rather than a reading of its documentation.

import (
	"encoding/json"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// runKstatus reads one object as JSON and prints {"status": ..., "message": ...}.
func runKstatus(in io.Reader, out io.Writer) int {
	raw, err := io.ReadAll(in)
	if err != nil {
		fmt.Fprintf(out, "{\"error\": %q}\n", err.Error())
		return 2
	}
	// As a client reads it from the server: integers stay integers.
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(raw); err != nil {
		fmt.Fprintf(out, "{\"error\": %q}\n", err.Error())
		return 2
	}
	result, err := status.Compute(&obj)
	if err != nil {
		fmt.Fprintf(out, "{\"error\": %q}\n", err.Error())
		return 2
	}
	encoded, _ := json.Marshal(map[string]string{"status": string(result.Status), "message": result.Message})
	fmt.Fprintln(out, string(encoded))
	return 0
}
