// The Go net/http counterpart of the `api` service, for `cargo xtask bench`:
// the same routes, bodies, headers and header read timeout, so the two can be
// measured side by side. Standard library only.
package main

import (
	"encoding/json"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

var version = "dev"

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func main() {
	root := mustJSON(map[string]string{"service": "api", "version": version})
	health := mustJSON(map[string]string{"status": "ok", "version": version})
	notFound := []byte(`{"error":"not found"}`)
	methodNotAllowed := []byte(`{"error":"method not allowed"}`)

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		var body []byte
		switch r.URL.Path {
		case "/":
			body = root
		case "/health":
			body = health
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write(notFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			w.Write(methodNotAllowed)
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	})

	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host := os.Getenv("HOST")
	if host == "" {
		host = "0.0.0.0"
	}
	srv := &http.Server{
		Addr:              net.JoinHostPort(host, port),
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Fatal(srv.ListenAndServe())
}
