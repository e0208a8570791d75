package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
)

const (
	root        = ".." // the repository root, from deploy/
	k8sDir      = "k8s"
	composeFile = root + "/docker-compose.yml"
	dockerfile  = root + "/Dockerfile"
	dashboard   = "grafana/tenant-cleanup.json"
	httpPort    = 9090
	// productImage is the repository name of the image the Dockerfile builds.
	productImage = "tenant-cleanup"
)

// productServices are the compose services and Kubernetes containers that
// run the product's binaries.
var productServices = []string{"analyzer", "marker", "cleaner"}

// ---------------------------------------------------------------- loading

// doc is one YAML document, with where it came from.
type doc struct {
	file string
	m    map[string]any
}

func (d doc) String() string {
	return fmt.Sprintf("%s (%s %s)", d.file, str(d.m, "kind"), str(d.m, "metadata", "name"))
}

// loadYAML parses every document of a (multi-document) YAML file.
func loadYAML(t *testing.T, path string) []doc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []doc
	for i := 0; ; i++ {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i+1, err)
		}
		if m != nil {
			docs = append(docs, doc{file: path, m: m})
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

// k8sDocs loads every YAML file under deploy/k8s.
func k8sDocs(t *testing.T) []doc {
	t.Helper()
	var docs []doc
	for _, path := range yamlFiles(t, k8sDir) {
		docs = append(docs, loadYAML(t, path)...)
	}
	return docs
}

// yamlFiles lists the YAML files under dirs.
func yamlFiles(t *testing.T, dirs ...string) []string {
	t.Helper()
	var paths []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				paths = append(paths, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

func isKustomize(d doc) bool {
	return strings.HasPrefix(str(d.m, "apiVersion"), "kustomize.config.k8s.io/")
}

// manifests are the Kubernetes objects (not the kustomize files).
func manifests(t *testing.T) []doc {
	t.Helper()
	var out []doc
	for _, d := range k8sDocs(t) {
		if !isKustomize(d) {
			out = append(out, d)
		}
	}
	// The Secrets the workloads read are created by the operator, as the
	// example shows; never applied by the kustomization.
	return append(out, loadYAML(t, secretExample)...)
}

// secretExample shows the Secrets kubectl apply -k does not apply.
const secretExample = "examples/secret.example.yaml"

func composeServices(t *testing.T) map[string]map[string]any {
	t.Helper()
	docs := loadYAML(t, composeFile)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", composeFile, len(docs))
	}
	out := map[string]map[string]any{}
	for name, s := range mapOf(docs[0].m["services"]) {
		out[name] = mapOf(s)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no services", composeFile)
	}
	return out
}

// ---------------------------------------------------------------- navigation

func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func listOf(v any) []any {
	l, _ := v.([]any)
	return l
}

func num(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case string:
		i, err := strconv.Atoi(n)
		return i, err == nil
	}
	return 0, false
}

// podSpec returns the pod spec of a Deployment, StatefulSet, DaemonSet, Job or CronJob.
func podSpec(d doc) map[string]any {
	switch str(d.m, "kind") {
	case "Deployment", "StatefulSet", "DaemonSet", "Job":
		return mapOf(get(d.m, "spec", "template", "spec"))
	case "CronJob":
		return mapOf(get(d.m, "spec", "jobTemplate", "spec", "template", "spec"))
	}
	return nil
}

func containers(spec map[string]any) []map[string]any {
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range listOf(spec[key]) {
			out = append(out, mapOf(c))
		}
	}
	return out
}

// ---------------------------------------------------------------- configuration

// configEnv is every variable the services read: the envconfig tags of
// config.Analyzer, config.Marker and config.Cleaner (embedded structs included).
func configEnv() map[string]bool {
	out := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if tag := f.Tag.Get("envconfig"); tag != "" {
				out[tag] = true
			}
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == reflect.TypeFor[config.Common]().PkgPath() {
				walk(f.Type)
			}
		}
	}
	for _, t := range []reflect.Type{reflect.TypeFor[config.Analyzer](), reflect.TypeFor[config.Marker](), reflect.TypeFor[config.Cleaner]()} {
		walk(t)
	}
	return out
}

func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	known := configEnv()
	if !known["DATA_PLANE_DATABASE_URL"] || !known["NATS_URL"] || len(known) < 15 {
		t.Fatalf("reading the envconfig tags of pkg/config found only %v", known)
	}
	return known
}

// podEnv is the environment a container gets: its env names and the keys of
// the ConfigMaps and Secrets of its envFrom, resolved against objs.
func podEnv(t *testing.T, d doc, c map[string]any, objs map[string]doc) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range listOf(c["envFrom"]) {
		for kind, key := range map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"} {
			name := str(ef, key, "name")
			if name == "" {
				continue
			}
			o, ok := objs[kind+"/"+name]
			if !ok {
				if get(ef, key, "optional") == true {
					continue
				}
				t.Errorf("%s: envFrom %s %q is not defined in deploy/k8s", d, kind, name)
				continue
			}
			for _, field := range []string{"data", "stringData"} {
				for k, v := range mapOf(o.m[field]) {
					env[k], _ = v.(string)
				}
			}
		}
	}
	for _, e := range listOf(c["env"]) {
		env[str(e, "name")] = str(e, "value")
	}
	return env
}

func objects(docs []doc) map[string]doc {
	out := map[string]doc{}
	for _, d := range docs {
		out[str(d.m, "kind")+"/"+str(d.m, "metadata", "name")] = d
	}
	return out
}

// composeEnv returns a compose service's environment (map or list form).
func composeEnv(s map[string]any) map[string]string {
	env := map[string]string{}
	switch e := s["environment"].(type) {
	case map[string]any:
		for k, v := range e {
			env[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			env[k] = v
		}
	}
	return env
}

// requireEnv checks that env has what every service needs to start.
func requireEnv(t *testing.T, where string, env map[string]string) {
	t.Helper()
	for _, n := range []string{"DATA_PLANE_DATABASE_URL", "NATS_URL"} {
		if _, ok := env[n]; !ok {
			t.Errorf("%s: %s is not set", where, n)
		}
	}
	if _, url := env["CONTROL_PLANE_DATABASE_URL"]; !url {
		if _, host := env["CONTROL_PLANE_RDS_HOST"]; !host {
			t.Errorf("%s: neither CONTROL_PLANE_DATABASE_URL nor CONTROL_PLANE_RDS_HOST is set", where)
		}
	}
	if v, ok := env["HTTP_ADDR"]; ok && v != "" && v != fmt.Sprintf(":%d", httpPort) {
		t.Errorf("%s: HTTP_ADDR=%q, but the probes and scrapes use :%d", where, v, httpPort)
	}
}

func TestEnvVarsExistInConfig(t *testing.T) {
	known := knownEnv(t)
	check := func(where string, env map[string]string) {
		t.Helper()
		names := make([]string, 0, len(env))
		for n := range env {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if !known[n] {
				t.Errorf("%s sets %s, which no service reads (not an envconfig tag in pkg/config)", where, n)
			}
		}
	}

	docs := manifests(t)
	objs := objects(docs)
	pods := 0
	for _, d := range docs {
		spec := podSpec(d)
		if spec == nil {
			continue
		}
		for _, c := range containers(spec) {
			pods++
			env := podEnv(t, d, c, objs)
			where := fmt.Sprintf("%s container %s", d, str(c, "name"))
			check(where, env)
			requireEnv(t, where, env)
		}
	}
	if pods < len(productServices) {
		t.Errorf("found %d containers in deploy/k8s, want at least %d", pods, len(productServices))
	}
	// Every ConfigMap's keys are variables too (they are all meant for envFrom).
	for _, d := range docs {
		if str(d.m, "kind") == "ConfigMap" {
			env := map[string]string{}
			for k := range mapOf(d.m["data"]) {
				env[k] = ""
			}
			check(d.String(), env)
		}
	}

	svcs := composeServices(t)
	for _, name := range productServices {
		s, ok := svcs[name]
		if !ok {
			t.Errorf("%s: no service %s", composeFile, name)
			continue
		}
		env := composeEnv(s)
		where := composeFile + " service " + name
		check(where, env)
		requireEnv(t, where, env)
	}
}

// specFor returns a fresh configuration struct of a product service.
func specFor(service string) any {
	switch service {
	case "analyzer":
		return &config.Analyzer{}
	case "marker":
		return &config.Marker{}
	case "cleaner":
		return &config.Cleaner{}
	}
	return nil
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}`)

// loadConfig runs pkg/config's own Load (parsing and validation) on exactly
// env: every variable the services read is unset first.
func loadConfig(t *testing.T, service string, env map[string]string) error {
	t.Helper()
	for n := range configEnv() {
		t.Setenv(n, "") // restored after the test
		os.Unsetenv(n)
	}
	for k, v := range env {
		os.Setenv(k, v)
	}
	return config.Load(specFor(service))
}

// TestConfigurationLoads checks that the settings of every deployment pass
// the services' own configuration checks (types, durations, DB_MAX_CONNS
// against the concurrency, ...), as the binaries would at start.
func TestConfigurationLoads(t *testing.T) {
	svcs := composeServices(t)
	for _, name := range productServices {
		env := composeEnv(svcs[name])
		for k, v := range env {
			// ${VAR:-default} as docker compose would expand it with VAR unset.
			env[k] = interpolation.ReplaceAllString(v, "$2")
		}
		if err := loadConfig(t, name, env); err != nil {
			t.Errorf("%s service %s: %v", composeFile, name, err)
		}
	}
	docs := manifests(t)
	objs := objects(docs)
	for _, d := range docs {
		spec := podSpec(d)
		if spec == nil {
			continue
		}
		for _, c := range containers(spec) {
			name := str(c, "name")
			if specFor(name) == nil {
				continue
			}
			if err := loadConfig(t, name, podEnv(t, d, c, objs)); err != nil {
				t.Errorf("%s container %s: %v", d, name, err)
			}
		}
	}
}

// ---------------------------------------------------------------- Kubernetes

func TestK8sManifests(t *testing.T) {
	docs := k8sDocs(t)
	listed := map[string]bool{} // files a kustomization lists
	var kustomizations int
	for _, d := range docs {
		if !isKustomize(d) {
			continue
		}
		kustomizations++
		dir := filepath.Dir(d.file)
		for _, key := range []string{"resources", "components"} {
			for _, r := range listOf(d.m[key]) {
				p := filepath.Join(dir, fmt.Sprint(r))
				if _, err := os.Stat(p); err != nil {
					t.Errorf("%s lists %s: %v", d.file, r, err)
				}
				listed[filepath.Clean(p)] = true
			}
		}
	}
	if kustomizations == 0 {
		t.Errorf("no kustomization.yaml in %s", k8sDir)
	}
	for _, d := range docs {
		if isKustomize(d) {
			continue
		}
		for _, f := range []string{"apiVersion", "kind"} {
			if str(d.m, f) == "" {
				t.Errorf("%s: no %s", d, f)
			}
		}
		if str(d.m, "metadata", "name") == "" {
			t.Errorf("%s: no metadata.name", d)
		}
		if ns := get(d.m, "metadata", "namespace"); ns != nil {
			t.Errorf("%s: metadata.namespace %v (the manifests are namespace-agnostic)", d, ns)
		}
		if !listed[filepath.Clean(d.file)] {
			t.Errorf("%s is listed by no kustomization.yaml", d.file)
		}
	}
}

func TestK8sWorkloads(t *testing.T) {
	docs := manifests(t)
	objs := objects(docs)
	seen := map[string]bool{}
	for _, d := range docs {
		spec := podSpec(d)
		if spec == nil {
			continue
		}
		kind := str(d.m, "kind")
		if sc := mapOf(spec["securityContext"]); sc["runAsNonRoot"] != true {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", d)
		}
		if n, _ := num(spec["terminationGracePeriodSeconds"]); n != 30 {
			t.Errorf("%s: terminationGracePeriodSeconds %v, want 30 (the services take up to 20 s to stop)", d, spec["terminationGracePeriodSeconds"])
		}
		volumes := map[string]map[string]any{}
		for _, v := range listOf(spec["volumes"]) {
			volumes[str(v, "name")] = mapOf(v)
		}
		for _, c := range containers(spec) {
			name := str(c, "name")
			seen[kind+"/"+name] = true
			cmd := listOf(c["command"])
			if len(cmd) == 0 || !slices.Contains(productServices, filepath.Base(fmt.Sprint(cmd[0]))) {
				t.Errorf("%s container %s: command %v does not run a service binary", d, name, cmd)
			}
			if get(c, "securityContext", "allowPrivilegeEscalation") != false {
				t.Errorf("%s container %s: allowPrivilegeEscalation is not false", d, name)
			}
			for _, r := range []string{"requests", "limits"} {
				if str(c, "resources", r, "memory") == "" {
					t.Errorf("%s container %s: no memory %s", d, name, r)
				}
			}
			if str(c, "resources", "requests", "cpu") == "" {
				t.Errorf("%s container %s: no cpu request", d, name)
			}
			if kind == "CronJob" {
				args := fmt.Sprint(append(cmd, listOf(c["args"])...))
				if !strings.Contains(args, "--once") {
					t.Errorf("%s container %s: %s does not run a single pass (--once)", d, name, args)
				}
			}
			// Files the configuration points at are mounted from a Secret that has them.
			env := podEnv(t, d, c, objs)
			for _, v := range []string{"PEM_FILE_LOCATION", "BASTION_KNOWN_HOSTS"} {
				if p := env[v]; p != "" && !mountedSecretFile(c, volumes, objs, p) {
					t.Errorf("%s container %s: %s=%s is not a key of a mounted Secret", d, name, v, p)
				}
			}
			if kind != "Deployment" {
				continue
			}
			ports := map[string]int{}
			for _, p := range listOf(c["ports"]) {
				n, _ := num(get(p, "containerPort"))
				ports[str(p, "name")] = n
			}
			for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
				hg := mapOf(get(c, probe, "httpGet"))
				port, ok := num(hg["port"])
				if !ok {
					port = ports[str(hg, "port")]
				}
				if str(hg, "path") != path || port != httpPort {
					t.Errorf("%s container %s: %s is %v, want GET %s on %d", d, name, probe, hg, path, httpPort)
				}
			}
			ann := mapOf(get(d.m, "spec", "template", "metadata", "annotations"))
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(httpPort) || ann["prometheus.io/path"] != "/metrics" {
				t.Errorf("%s: prometheus.io scrape annotations %v", d, ann)
			}
			if name == "cleaner" {
				if n, _ := num(get(d.m, "spec", "replicas")); n != 3 {
					t.Errorf("%s: replicas %v, want 3", d, get(d.m, "spec", "replicas"))
				}
			}
		}
	}
	for _, want := range []string{"Deployment/analyzer", "Deployment/marker", "Deployment/cleaner", "CronJob/analyzer"} {
		if !seen[want] {
			t.Errorf("deploy/k8s has no %s container", want)
		}
	}
}

// mountedSecretFile reports whether path is a key of a Secret that c mounts.
func mountedSecretFile(c map[string]any, volumes map[string]map[string]any, objs map[string]doc, path string) bool {
	for _, m := range listOf(c["volumeMounts"]) {
		mp := strings.TrimSuffix(str(m, "mountPath"), "/") + "/"
		if !strings.HasPrefix(path, mp) {
			continue
		}
		secret := str(volumes[str(m, "name")], "secret", "secretName")
		s, ok := objs["Secret/"+secret]
		if !ok {
			continue
		}
		key := strings.TrimPrefix(path, mp)
		if get(s.m, "stringData", key) != nil || get(s.m, "data", key) != nil {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- images

// splitImage returns an image reference's repository (without registry) and tag.
func splitImage(ref string) (repo, tag string) {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref, tag = ref[:i], ref[i+1:]
	}
	if i := strings.Index(ref, "/"); i >= 0 && strings.ContainsAny(ref[:i], ".:") {
		ref = ref[i+1:] // registry host
	}
	return strings.TrimPrefix(ref, "library/"), tag
}

var versionTag = regexp.MustCompile(`^(\d+)(?:\.(\d+))?`)

// tagAtLeast reports whether tag is a version (2.12, 2.12.1, 2.12-alpine) at least major.minor.
func tagAtLeast(tag string, major, minor int) bool {
	m := versionTag.FindStringSubmatch(tag)
	if m == nil {
		return false
	}
	ma, _ := strconv.Atoi(m[1])
	mi, _ := strconv.Atoi(m[2])
	return ma > major || ma == major && mi >= minor
}

// checkImage accepts the product image, nats 2.12 or newer and postgres 15.
func checkImage(ref string) error {
	repo, tag := splitImage(ref)
	switch {
	case repo == productImage || strings.HasSuffix(repo, "/"+productImage):
		return nil
	case repo == "nats":
		if tagAtLeast(tag, 2, 12) {
			return nil
		}
		return fmt.Errorf("%s: JetStream needs nats-server 2.12 or newer (a pinned version tag)", ref)
	case repo == "postgres":
		if tag == "15" || strings.HasPrefix(tag, "15.") || strings.HasPrefix(tag, "15-") {
			return nil
		}
		return fmt.Errorf("%s: want postgres:15", ref)
	}
	return fmt.Errorf("%s: not an expected image (the product image %s, nats:2.12+, postgres:15)", ref, productImage)
}

func TestImages(t *testing.T) {
	for _, d := range k8sDocs(t) {
		for _, img := range listOf(d.m["images"]) { // kustomize image overrides
			if str(img, "name") != productImage {
				t.Errorf("%s: image override for %q, want %s", d.file, str(img, "name"), productImage)
			}
		}
		spec := podSpec(d)
		if spec == nil {
			continue
		}
		for _, c := range containers(spec) {
			if repo, _ := splitImage(str(c, "image")); repo != productImage {
				t.Errorf("%s container %s: image %q, want the product image %s", d, str(c, "name"), str(c, "image"), productImage)
			}
		}
	}
	svcs := composeServices(t)
	for name, s := range svcs {
		img := str(s, "image")
		if img == "" {
			t.Errorf("%s service %s: no image", composeFile, name)
			continue
		}
		if err := checkImage(img); err != nil {
			t.Errorf("%s service %s: %v", composeFile, name, err)
		}
		repo, _ := splitImage(img)
		if slices.Contains(productServices, name) != (repo == productImage) {
			t.Errorf("%s service %s runs image %s", composeFile, name, img)
		}
		if repo == productImage && get(s, "build") == nil {
			t.Errorf("%s service %s: the product image is not built from the Dockerfile", composeFile, name)
		}
	}
	for _, want := range []string{"nats", "postgres"} {
		if _, ok := svcs[want]; !ok {
			t.Errorf("%s: no %s service", composeFile, want)
		}
	}
	for _, c := range []struct{ ref, err string }{
		{"nats:2.12", ""}, {"nats:2.13.1-alpine", ""}, {"docker.io/library/nats:2.12", ""},
		{"nats:2.11", "2.12"}, {"nats:latest", "2.12"}, {"postgres:15", ""}, {"postgres:16", "15"},
		{"ghcr.io/acme/tenant-cleanup:v1", ""}, {"redis:7", "expected"},
	} {
		err := checkImage(c.ref)
		if (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("checkImage(%s) = %v, want error containing %q", c.ref, err, c.err)
		}
	}
}

// ---------------------------------------------------------------- compose

func TestCompose(t *testing.T) {
	svcs := composeServices(t)
	if cmd := listOfStrings(svcs["nats"]["command"]); !slices.Contains(cmd, "-js") || !slices.Contains(cmd, "-sd") {
		t.Errorf("nats: command %v, want JetStream (-js) with a file store (-sd)", cmd)
	}
	for _, name := range productServices {
		s := svcs[name]
		if s["healthcheck"] == nil {
			t.Errorf("service %s: no healthcheck", name)
		}
		if str(s, "stop_grace_period") == "" {
			t.Errorf("service %s: no stop_grace_period (the services take up to 20 s to stop; Docker's default is 10 s)", name)
		}
		cmd := listOfStrings(s["command"])
		if len(cmd) == 0 || filepath.Base(cmd[0]) != name {
			t.Errorf("service %s: command %v, want the %s binary", name, cmd, name)
		}
	}
	// docker compose up --scale cleaner=3
	for _, key := range []string{"container_name", "ports"} {
		if svcs["cleaner"][key] != nil {
			t.Errorf("service cleaner sets %s: it could not be scaled", key)
		}
	}
	// Bind mounts exist (paths are relative to the repository root).
	for name, s := range svcs {
		for _, v := range listOfStrings(s["volumes"]) {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	vols := strings.Join(listOfStrings(svcs["postgres"]["volumes"]), " ")
	if !strings.Contains(vols, "./fixtures/onyx") || !strings.Contains(vols, "/docker-entrypoint-initdb.d/") {
		t.Errorf("postgres: volumes %s do not load fixtures/onyx with an init script", vols)
	}
	init, err := os.ReadFile(filepath.Join(root, "deploy/compose/initdb.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CREATE DATABASE onyx", "CREATE DATABASE control",
		"--dbname onyx -f /fixtures/onyx/dataplane.sql", "--dbname control -f /fixtures/onyx/controlplane.sql"} {
		if !strings.Contains(string(init), want) {
			t.Errorf("deploy/compose/initdb.sh does not contain %q", want)
		}
	}
}

func listOfStrings(v any) []string {
	var out []string
	for _, x := range listOf(v) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// ---------------------------------------------------------------- Dockerfile

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	// Instructions only: comments do not count.
	var lines, copies []string
	for _, line := range strings.Split(string(b), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, line)
			if strings.HasPrefix(strings.ToUpper(l), "COPY --FROM=") {
				copies = append(copies, l)
			}
		}
	}
	text := strings.Join(lines, "\n")
	for _, bin := range []string{"bin/analyzer", "bin/marker", "bin/cleaner", "bin/tenantctl"} {
		if !strings.Contains(strings.Join(copies, "\n"), bin) {
			t.Errorf("the Dockerfile's final stage does not COPY %s from the build stage", bin)
		}
	}
	if strings.Contains(text, "make build") {
		mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
		if err != nil {
			t.Fatal(err)
		}
		for _, pkg := range []string{"./services/analyzer", "./services/marker", "./services/cleaner", "./cmd/tenantctl"} {
			if !strings.Contains(string(mk), pkg) {
				t.Errorf("the Dockerfile runs make build, but the Makefile does not build %s", pkg)
			}
		}
	} else if !strings.Contains(text, "go build") {
		t.Error("Dockerfile runs neither make build nor go build")
	}

	args := map[string]string{}
	var froms []string
	var user string
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "ARG":
			k, v, _ := strings.Cut(f[1], "=")
			args[k] = v
		case "FROM":
			img := f[1]
			for _, a := range f[1:] {
				if !strings.HasPrefix(a, "--") {
					img = a
					break
				}
			}
			for k, v := range args {
				img = strings.ReplaceAll(img, "${"+k+"}", v)
			}
			froms = append(froms, img)
			user = ""
		case "USER":
			user = f[1]
		case "ENTRYPOINT":
			t.Errorf("Dockerfile sets an ENTRYPOINT (%s): the command names the service", line)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile stages %v: want a build stage and a final stage", froms)
	}
	if repo, tag := splitImage(froms[0]); repo != "golang" || !tagAtLeast(tag, 1, 26) {
		t.Errorf("build stage FROM %s, want golang:1.26", froms[0])
	}
	if final := froms[len(froms)-1]; !strings.HasPrefix(final, "gcr.io/distroless/static") && !strings.HasPrefix(final, "debian:") {
		t.Errorf("final stage FROM %s, want distroless/static or debian-slim", final)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
}

// ---------------------------------------------------------------- Grafana

var (
	metricToken = regexp.MustCompile(`\btenant_cleanup_[a-z0-9_]+`)
	selector    = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)\s*\{`)
)

// histograms are the metrics of metrics.Names() that are histograms.
var histograms = []string{metrics.StepDurationSeconds, metrics.ShardStepDurationSeconds, metrics.AnalyzerPassDurationSeconds}

// metricOf maps a series name to its metric name (a histogram's _bucket, _sum, _count).
func metricOf(series string) string {
	for _, h := range histograms {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if series == h+suffix {
				return h
			}
		}
	}
	return series
}

// queries collects every PromQL expression of the dashboard: panel targets
// and template variable queries.
func queries(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			switch s, isStr := e.(string); {
			case isStr && (k == "expr" || k == "definition"):
				*out = append(*out, s)
			case isStr && k == "query":
				*out = append(*out, s)
			default:
				queries(e, out)
			}
		}
	case []any:
		for _, e := range x {
			queries(e, out)
		}
	}
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	if str(dash, "title") == "" || str(dash, "uid") == "" || len(listOf(dash["panels"])) == 0 {
		t.Fatalf("%s: no title, uid or panels", dashboard)
	}
	ids := map[int]bool{}
	for _, p := range listOf(dash["panels"]) {
		id, _ := get(p, "id").(float64)
		if ids[int(id)] {
			t.Errorf("panel id %v used twice", id)
		}
		ids[int(id)] = true
		if get(p, "gridPos") == nil {
			t.Errorf("panel %q: no gridPos", str(p, "title"))
		}
		if str(p, "type") != "row" && len(listOf(get(p, "targets"))) == 0 {
			t.Errorf("panel %q: no query", str(p, "title"))
		}
		for _, tg := range listOf(get(p, "targets")) {
			if strings.TrimSpace(str(tg, "expr")) == "" {
				t.Errorf("panel %q: a target without expr", str(p, "title"))
			}
		}
	}

	var exprs []string
	queries(dash, &exprs)
	if len(exprs) == 0 {
		t.Fatal("no PromQL expression in the dashboard")
	}
	defined := metrics.Names()
	used := map[string]bool{}
	for _, e := range exprs {
		for _, tok := range metricToken.FindAllString(e, -1) {
			m := metricOf(tok)
			if !slices.Contains(defined, m) {
				t.Errorf("dashboard uses %s, which pkg/metrics does not define (%v): %s", tok, defined, e)
			}
			used[m] = true
		}
		for _, s := range selector.FindAllStringSubmatch(e, -1) {
			if name := metricOf(s[1]); name != "up" && !slices.Contains(defined, name) {
				t.Errorf("dashboard selects %s, neither up nor a pkg/metrics metric: %s", s[1], e)
			}
		}
	}
	for _, n := range defined {
		if !used[n] {
			t.Errorf("pkg/metrics defines %s but the dashboard does not show it", n)
		}
	}
}
