// Command noopextender is the cheapest scheduler extender that still responds correctly. Its
// filter verb passes every node it is given and its prioritize verb adds no score. The
// extender benchmark runs kube-scheduler against it to measure what the extender protocol
// itself costs kube-scheduler, apart from any extender's own work.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

// The fields of ExtenderArgs and ExtenderFilterResult this server reads or writes
// (k8s.io/kube-scheduler/extender/v1). The Pod is skipped unparsed.
type extenderArgs struct {
	Pod       json.RawMessage  `json:"Pod"`
	Nodes     *json.RawMessage `json:"Nodes,omitempty"`
	NodeNames *[]string        `json:"NodeNames,omitempty"`
}

type filterResult struct {
	Nodes                      *json.RawMessage  `json:"Nodes,omitempty"`
	NodeNames                  *[]string         `json:"NodeNames,omitempty"`
	FailedNodes                map[string]string `json:"FailedNodes"`
	FailedAndUnresolvableNodes map[string]string `json:"FailedAndUnresolvableNodes"`
	Error                      string            `json:"Error"`
}

func decode(w http.ResponseWriter, r *http.Request) (extenderArgs, bool) {
	var args extenderArgs
	if err := json.NewDecoder(r.Body).Decode(&args); err != nil {
		http.Error(w, "invalid ExtenderArgs: "+err.Error(), http.StatusBadRequest)
		return args, false
	}
	return args, true
}

func main() {
	address := flag.String("address", "127.0.0.1:0", "host:port to listen on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /filter", func(w http.ResponseWriter, r *http.Request) {
		args, ok := decode(w, r)
		if !ok {
			return
		}
		result := filterResult{
			Nodes:                      args.Nodes,
			NodeNames:                  args.NodeNames,
			FailedNodes:                map[string]string{},
			FailedAndUnresolvableNodes: map[string]string{},
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(result); err != nil {
			log.Printf("writing the filter result: %v", err)
		}
	})
	mux.HandleFunc("POST /prioritize", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := decode(w, r); !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if _, err := w.Write([]byte("[]\n")); err != nil {
			log.Printf("writing the prioritize result: %v", err)
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	log.Printf("noopextender listening on %s", *address)
	log.Fatal(http.ListenAndServe(*address, mux))
}
