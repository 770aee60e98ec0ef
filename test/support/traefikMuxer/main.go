// Traefik's own HTTP router decides, for tests: reads {"routers":[{"name","rule","priority"}],
// "requests":[{"host","path","method"}]} on stdin and writes, per request, the name of the router
// Traefik's muxer picks ("" for its 404). Uses traefik/traefik v3 pkg/muxer/http (rule parser,
// matchers, priority order, routing path) and pkg/middlewares/requestdecorator (the canonical host
// the Host matcher reads), as Traefik chains them for one entrypoint.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/traefik/traefik/v3/pkg/middlewares/requestdecorator"
	muxhttp "github.com/traefik/traefik/v3/pkg/muxer/http"
)

type input struct {
	Routers []struct {
		Name     string `json:"name"`
		Rule     string `json:"rule"`
		Priority int    `json:"priority"`
	} `json:"routers"`
	Requests []struct {
		Host   string `json:"host"`
		Path   string `json:"path"`
		Method string `json:"method"`
	} `json:"requests"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	parser, err := muxhttp.NewSyntaxParser()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	mux := muxhttp.NewMuxer(parser, nil)
	for _, r := range in.Routers {
		name := r.Name
		priority := r.Priority
		if priority == 0 {
			priority = muxhttp.GetRulePriority(r.Rule)
		}
		handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Router", name) })
		if err := mux.AddRoute(r.Rule, "", priority, "swarm", handler); err != nil {
			fmt.Fprintf(os.Stderr, "router %s: %v\n", r.Name, err)
			os.Exit(2)
		}
	}
	decorator := requestdecorator.New(nil)
	out := make([]string, 0, len(in.Requests))
	for _, q := range in.Requests {
		req := httptest.NewRequest(q.Method, "http://"+q.Host+q.Path, nil)
		rec := httptest.NewRecorder()
		decorator.ServeHTTP(rec, req, mux.ServeHTTP)
		out = append(out, rec.Header().Get("X-Router"))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
}
