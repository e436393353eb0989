// Command kstatus reads Kubernetes objects as JSON on stdin, one after another, and prints for
// each the status that sigs.k8s.io/cli-utils/pkg/kstatus computes for it: what Flux, kpt and
// cli-utils waits see. One JSON line per object: {"status": ..., "message": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	dec := json.NewDecoder(os.Stdin)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return
		} else if err != nil {
			fail("reading an object: %v", err)
		}
		// As the apiserver's clients decode it: whole numbers as int64, which kstatus expects.
		var obj map[string]interface{}
		if err := utiljson.Unmarshal(raw, &obj); err != nil {
			fail("decoding an object: %v", err)
		}
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			fail("computing the status: %v", err)
		}
		line, err := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
		if err != nil {
			fail("writing the status: %v", err)
		}
		fmt.Println(string(line))
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
