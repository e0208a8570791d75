package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// The schema check: every document under deploy/k8s (the base, the
// analyzer-cronjob and monitoring components) and deploy/examples is decoded
// strictly into the real API types (k8s.io/api for the built-in kinds, the
// prometheus-operator's monitoring/v1 types for ServiceMonitor and
// PrometheusRule): a misspelled or unknown field, a field at the wrong level,
// a value of the wrong type or a duplicate key fails, as the API server's
// strict field validation would (kubectl apply --validate=strict). The
// kustomize files, whose Go types are not served in a version this Go
// accepts without a newer toolchain, are decoded strictly into the subset of
// kustomize's schema they use.

// kustomizeFile is the part of kustomize's Kustomization/Component schema the
// files here use; strict decoding refuses any other field.
type kustomizeFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Patches    []struct {
		Path   string `json:"path,omitempty"`
		Patch  string `json:"patch,omitempty"`
		Target *struct {
			Group   string `json:"group,omitempty"`
			Version string `json:"version,omitempty"`
			Kind    string `json:"kind,omitempty"`
			Name    string `json:"name,omitempty"`
		} `json:"target,omitempty"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// typed returns a new value of the Go type of a document's apiVersion and
// kind, or nil for a kind the deployment is not expected to hold.
func typed(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "v1 Secret":
		return &corev1.Secret{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "batch/v1 CronJob":
		return &batchv1.CronJob{}
	case "batch/v1 Job":
		return &batchv1.Job{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1 PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	case "kustomize.config.k8s.io/v1beta1 Kustomization", "kustomize.config.k8s.io/v1alpha1 Component":
		return &kustomizeFile{}
	}
	return nil
}

// rawDoc is one YAML document as written, with where it came from.
type rawDoc struct {
	file string
	n    int
	text []byte
}

func (d rawDoc) String() string { return fmt.Sprintf("%s document %d", d.file, d.n) }

// splitYAML returns each document of a (multi-document) YAML file, as text.
func splitYAML(t *testing.T, path string) []rawDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return splitYAMLBytes(t, path, b)
}

func splitYAMLBytes(t *testing.T, path string, b []byte) []rawDoc {
	t.Helper()
	dec := yamlv3.NewDecoder(bytes.NewReader(b))
	var out []rawDoc
	for i := 1; ; i++ {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yamlv3.ScalarNode && n.Content[0].Tag == "!!null" {
			continue
		}
		text, err := yamlv3.Marshal(&n)
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		out = append(out, rawDoc{file: path, n: i, text: text})
	}
	return out
}

// decodeStrict decodes one document into its API type, refusing unknown and
// duplicate fields and values of the wrong type.
func decodeStrict(d rawDoc) (any, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(d.text, &tm); err != nil {
		return nil, err
	}
	obj := typed(tm.APIVersion, tm.Kind)
	if obj == nil {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this deployment is expected to hold (add its API type to typed())", tm.APIVersion, tm.Kind)
	}
	// As the API server decodes with strict field validation: YAML to JSON
	// refusing duplicate keys, then a case-sensitive decoding that reports
	// unknown and duplicate fields (encoding/json would match
	// readOnlyRootFileSystem to readOnlyRootFilesystem).
	js, err := sigsyaml.YAMLToJSONStrict(d.text)
	if err != nil {
		return nil, err
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// deployDocs are every YAML document under deploy/k8s and deploy/examples.
func deployDocs(t *testing.T) []rawDoc {
	t.Helper()
	var docs []rawDoc
	for _, path := range yamlFiles(t, k8sDir, "examples") {
		docs = append(docs, splitYAML(t, path)...)
	}
	return docs
}

// The strict decoding itself must refuse what the API server would: each
// mutation of a valid document below is an error.
func TestK8sSchemaDecoderIsStrict(t *testing.T) {
	base := splitYAML(t, filepath.Join(k8sDir, "deployment-cleaner.yaml"))
	if len(base) != 1 {
		t.Fatalf("deployment-cleaner.yaml: %d documents, want 1", len(base))
	}
	if _, err := decodeStrict(base[0]); err != nil {
		t.Fatalf("the cleaner's Deployment does not decode: %v", err)
	}
	for name, mutate := range map[string]func(string) string{
		"misspelled field": func(s string) string {
			return strings.Replace(s, "readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1)
		},
		"field at a wrong level": func(s string) string { return strings.Replace(s, "  replicas: 3\n", "  replicas: 3\n  image: x\n", 1) },
		"wrong type":             func(s string) string { return strings.Replace(s, "replicas: 3", "replicas: three", 1) },
		"duplicate key": func(s string) string {
			return strings.Replace(s, "  replicas: 3\n", "  replicas: 3\n  replicas: 2\n", 1)
		},
		"unknown kind": func(s string) string { return strings.Replace(s, "kind: Deployment", "kind: Deploymnet", 1) },
	} {
		text := mutate(string(base[0].text))
		if text == string(base[0].text) {
			t.Errorf("%s: the mutation changed nothing (the manifest changed?)", name)
			continue
		}
		if _, err := decodeStrict(rawDoc{file: "mutated", n: 1, text: []byte(text)}); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, text)
		}
	}
	// The monitoring types are strict too.
	sm := rawDoc{file: "mutated", n: 1, text: []byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoints:\n    - port: http\n      intervall: 30s\n")}
	if _, err := decodeStrict(sm); err == nil {
		t.Error("a ServiceMonitor endpoint with a misspelled field decoded without error")
	}
}

func TestK8sSchema(t *testing.T) {
	docs := deployDocs(t)
	var (
		services    []*corev1.Service
		deployments []*appsv1.Deployment
		pdbs        []*policyv1.PodDisruptionBudget
		monitors    []*monitoringv1.ServiceMonitor
		rules       []*monitoringv1.PrometheusRule
		pods        = map[string]*corev1.PodTemplateSpec{}
		kinds       = map[string]bool{}
	)
	for _, d := range docs {
		obj, err := decodeStrict(d)
		if err != nil {
			t.Errorf("%s: %v", d, err)
			continue
		}
		if o, ok := obj.(metav1.Object); ok {
			name := o.GetName()
			for _, msg := range validation.IsDNS1123Subdomain(name) {
				t.Errorf("%s: metadata.name %q: %s", d, name, msg)
			}
			for k, v := range o.GetLabels() {
				for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
					t.Errorf("%s: label %s=%s: %s", d, k, v, msg)
				}
			}
		}
		switch o := obj.(type) {
		case *corev1.Service:
			services = append(services, o)
		case *appsv1.Deployment:
			deployments = append(deployments, o)
			pods["Deployment "+o.Name] = &o.Spec.Template
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(o.Spec.Template.Labels)) {
				t.Errorf("%s: the selector %v does not select the pod template's labels %v (%v)", d, o.Spec.Selector, o.Spec.Template.Labels, err)
			}
		case *batchv1.CronJob:
			pods["CronJob "+o.Name] = &o.Spec.JobTemplate.Spec.Template
		case *batchv1.Job:
			pods["Job "+o.Name] = &o.Spec.Template
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, o)
		case *monitoringv1.ServiceMonitor:
			monitors = append(monitors, o)
		case *monitoringv1.PrometheusRule:
			rules = append(rules, o)
		}
		var tm metav1.TypeMeta
		_ = sigsyaml.Unmarshal(d.text, &tm)
		kinds[tm.Kind] = true
	}
	for _, k := range []string{"Deployment", "CronJob", "ConfigMap", "Secret", "Service", "PersistentVolumeClaim", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "Kustomization", "Component"} {
		if !kinds[k] {
			t.Errorf("no %s was decoded: the test no longer sees the whole deployment", k)
		}
	}

	// A restrictive securityContext on every pod and container.
	if len(pods) < 4 {
		t.Errorf("%d pod templates, want the three Deployments and the CronJob", len(pods))
	}
	for where, p := range pods {
		for _, problem := range checkPodSecurity(where, &p.Spec) {
			t.Error(problem)
		}
	}

	// The PodDisruptionBudget covers the cleaner's pods, and only them.
	var cleanerCovered bool
	for _, pdb := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("PodDisruptionBudget %s: selector %v (%v)", pdb.Name, pdb.Spec.Selector, err)
			continue
		}
		for _, dep := range deployments {
			if !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
				continue
			}
			if dep.Spec.Template.Labels["app.kubernetes.io/component"] != "cleaner" {
				t.Errorf("PodDisruptionBudget %s selects the pods of %s", pdb.Name, dep.Name)
			} else {
				cleanerCovered = true
			}
		}
	}
	if !cleanerCovered {
		t.Error("no PodDisruptionBudget selects the cleaner's pods")
	}

	// The ServiceMonitor selects a Service whose port it names, and that
	// Service selects the pods of every Deployment.
	if len(monitors) == 0 {
		t.Fatal("no ServiceMonitor")
	}
	for _, m := range monitors {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil {
			t.Errorf("ServiceMonitor %s: %v", m.Name, err)
			continue
		}
		var found bool
		for _, s := range services {
			if !sel.Matches(labels.Set(s.Labels)) {
				continue
			}
			found = true
			for _, ep := range m.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: endpoint port %q is not a port of Service %s", m.Name, ep.Port, s.Name)
				}
			}
			for _, dep := range deployments {
				if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
					t.Errorf("Service %s does not select the pods of %s", s.Name, dep.Name)
				}
			}
		}
		if !found {
			t.Errorf("ServiceMonitor %s selects no Service", m.Name)
		}
	}
	var alerts int
	for _, r := range rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				if rule.Alert == "" {
					continue
				}
				alerts++
				if rule.Expr.String() == "" || rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
					t.Errorf("PrometheusRule %s alert %s: expr, severity label and summary are required", r.Name, rule.Alert)
				}
			}
		}
	}
	if alerts < 5 {
		t.Errorf("%d alerts; want at least stuck tenants, dead letters, no analyzer pass, breaker open and consumer backlog", alerts)
	}
}

// checkPodSecurity asserts a restrictive securityContext: non-root, the
// runtime's seccomp profile, no privilege escalation, a read-only root
// filesystem and no capabilities, for every container.
func checkPodSecurity(where string, spec *corev1.PodSpec) []string {
	var problems []string
	errorf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		errorf("%s: the pod runs as root (runAsUser 0)", where)
	}
	if len(spec.Containers) == 0 {
		errorf("%s: no container", where)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		errorf("%s: the pod shares a host namespace", where)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			errorf("%s container %s: no securityContext", where, c.Name)
			continue
		}
		nonRoot := psc.RunAsNonRoot
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			errorf("%s container %s: runAsNonRoot is not true", where, c.Name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			errorf("%s container %s: runAsUser 0", where, c.Name)
		}
		seccomp := psc.SeccompProfile
		if sc.SeccompProfile != nil {
			seccomp = sc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			errorf("%s container %s: seccompProfile is not RuntimeDefault (%v)", where, c.Name, seccomp)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			errorf("%s container %s: allowPrivilegeEscalation is not false", where, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			errorf("%s container %s: readOnlyRootFilesystem is not true", where, c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			errorf("%s container %s: privileged", where, c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			errorf("%s container %s: capabilities %v; want drop [ALL] and none added", where, c.Name, sc.Capabilities)
		}
	}
	return problems
}

// The securityContext check itself fails on a pod that is not restricted.
func TestPodSecurityCheckFails(t *testing.T) {
	no, yes := false, true
	for name, spec := range map[string]corev1.PodSpec{
		"no securityContext": {Containers: []corev1.Container{{Name: "c"}}},
		"escalation allowed": {SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "c", SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &yes, ReadOnlyRootFilesystem: &yes,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}},
		"no seccomp": {SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes},
			Containers: []corev1.Container{{Name: "c", SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}},
		"writable root": {SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "c", SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &no,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}},
		"capabilities kept": {SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "c", SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes}}}},
	} {
		if problems := checkPodSecurity(name, &spec); len(problems) == 0 {
			t.Errorf("%s: the check passed", name)
		}
	}
}
