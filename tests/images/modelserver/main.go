// Command modelserver is a small model server that speaks modelyard's EMBEDDING, RERANKING and
// IMAGE_CLASSIFICATION contracts, for the tests that run Models as real containers on a real
// node.
//
// It is configured by environment variables, as a Model's parameters reach a container, so one
// image plays every behaviour a test needs:
//
//	PORT                 port to listen on (default 8080)
//	READY_AFTER_SECONDS  the health endpoint answers 503 until this long after start
//	NEVER_READY          "true": the health endpoint never answers 200 (a model that never loads)
//	CRASH                "true": print a reason and exit 1 at start (a crash loop)
//	ANSWER               "conforming" (default), "wrong-shape" or "error" (HTTP 500); to an
//	                     image: also "failed" (status: failed) or "unregistered-label"
//	HEALTH_PATH          the readiness endpoint (default /health)
//	CLASSES              what GET /api/classes lists, comma-separated (default cat,dog,bird)
//
// Any POST other than to the health endpoint is a prediction: a body with "texts" gets
// embeddings, one per text; a body with "chunks" gets one score per chunk; a body with "image"
// gets the annotation tool's classification answer. Every request is logged on stdout, so
// `kubectl logs` shows what the model was asked.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type request struct {
	Texts  []string        `json:"texts"`
	Query  string          `json:"query"`
	Chunks []string        `json:"chunks"`
	Image  json.RawMessage `json:"image"`
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	if os.Getenv("CRASH") == "true" {
		log.Print("loading the model failed: CRASH=true")
		os.Exit(1)
	}
	port := env("PORT", "8080")
	healthPath := env("HEALTH_PATH", "/health")
	answer := env("ANSWER", "conforming")
	readyAfter, err := strconv.ParseFloat(env("READY_AFTER_SECONDS", "0"), 64)
	if err != nil {
		log.Fatalf("READY_AFTER_SECONDS: %v", err)
	}
	started := time.Now()
	readyAt := started.Add(time.Duration(readyAfter * float64(time.Second)))
	neverReady := os.Getenv("NEVER_READY") == "true"

	mux := http.NewServeMux()
	mux.HandleFunc(healthPath, func(w http.ResponseWriter, r *http.Request) {
		if neverReady || time.Now().Before(readyAt) {
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	classes := strings.Split(env("CLASSES", "cat,dog,bird"), ",")
	mux.HandleFunc("/api/classes", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		reply(w, http.StatusOK, classes)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		if r.Method != http.MethodPost {
			reply(w, http.StatusOK, map[string]string{"status": "ok"})
			return
		}
		var asked request
		if err := json.NewDecoder(r.Body).Decode(&asked); err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"detail": err.Error()})
			return
		}
		switch answer {
		case "error":
			reply(w, http.StatusInternalServerError, map[string]string{"detail": "CUDA out of memory"})
		case "wrong-shape":
			reply(w, http.StatusOK, map[string]any{"scores": []float64{0.1, 0.9}})
		default:
			if asked.Image != nil {
				reply(w, http.StatusOK, classify(answer, classes[0]))
				return
			}
			reply(w, http.StatusOK, predict(asked))
		}
	})
	log.Printf("serving on :%s (health %s, ready after %.1f s, answer %s)", port, healthPath, readyAfter, answer)
	server := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.ListenAndServe())
}

// predict answers in the contract of the request's type: embeddings pair each text with a
// vector, scores follow the chunks' order.
func predict(asked request) map[string]any {
	if asked.Texts != nil {
		embeddings := make([][]any, 0, len(asked.Texts))
		for _, text := range asked.Texts {
			embeddings = append(embeddings, []any{text, []float64{float64(len(text)), 0.5, -0.5}})
		}
		return map[string]any{"embeddings": embeddings}
	}
	scores := make([]float64, 0, len(asked.Chunks))
	for i := range asked.Chunks {
		scores = append(scores, 1.0/float64(i+1))
	}
	return map[string]any{"chunk_scores": scores, "tokens_used": len(asked.Query)}
}

// classify answers as the annotation tool's "bring your own model" servers do.
func classify(answer, label string) map[string]any {
	if answer == "failed" {
		return map[string]any{"status": "failed", "results": []any{}, "message": "the image could not be decoded"}
	}
	if answer == "unregistered-label" {
		label = "zebra"
	}
	result := map[string]any{"name": "object-1", "label": label, "confidence": 0.93, "tag": map[string]any{"box": []int{1, 2, 3, 4}}}
	return map[string]any{"status": "succeeded", "results": []any{result}}
}

func reply(w http.ResponseWriter, status int, payload any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(payload); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
