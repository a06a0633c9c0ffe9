// Command noopwebhook is the cheapest mutating admission webhook that still mutates. It
// responds to every AdmissionReview with one JSON Patch operation that adds an annotation,
// over HTTPS with keep-alive. The webhook latency benchmark runs the API server against it to
// measure what calling any webhook costs a pod create, apart from a webhook's own work.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

// The fields of AdmissionReview (admission.k8s.io/v1) this server reads or writes. The
// request's object is skipped unparsed.
type review struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Request    *request  `json:"request,omitempty"`
	Response   *response `json:"response,omitempty"`
}

type request struct {
	UID    string          `json:"uid"`
	Object json.RawMessage `json:"object"`
}

type response struct {
	UID       string `json:"uid"`
	Allowed   bool   `json:"allowed"`
	PatchType string `json:"patchType"`
	Patch     string `json:"patch"`
}

// The patch sets the whole annotations map, because the benchmark's pods come without one.
var patch = base64.StdEncoding.EncodeToString(
	[]byte(`[{"op":"add","path":"/metadata/annotations","value":{"bench.temper.codes/noop":"1"}}]`),
)

func mutate(w http.ResponseWriter, r *http.Request) {
	var in review
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Request == nil {
		http.Error(w, "invalid AdmissionReview: a request object is required", http.StatusBadRequest)
		return
	}
	out := review{
		APIVersion: in.APIVersion,
		Kind:       in.Kind,
		Response: &response{
			UID: in.Request.UID, Allowed: true, PatchType: "JSONPatch", Patch: patch,
		},
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		log.Printf("writing the AdmissionReview response: %v", err)
	}
}

func main() {
	address := flag.String("address", "127.0.0.1:8443", "host:port to listen on")
	cert := flag.String("cert", "", "PEM certificate file")
	key := flag.String("key", "", "PEM private key file")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", mutate)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	log.Printf("noopwebhook listening on %s", *address)
	log.Fatal(http.ListenAndServeTLS(*address, *cert, *key, mux))
}
