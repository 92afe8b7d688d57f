package monitoring

import (
	"slices"
	"strings"
	"testing"
)

// promDatasource is the datasource every panel, query and variable must
// use: the dashboard's datasource variable, so that an import asks for
// nothing and a user can switch Prometheus servers.
var promDatasource = datasourceRef{Type: "prometheus", UID: "${datasource}"}

// minSchemaVersion is the classic JSON model's schemaVersion of Grafana
// 11.0; newer Grafana migrates it forward on load.
const minSchemaVersion = 39

func TestDashboardModel(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < minSchemaVersion {
		t.Errorf("schemaVersion %d, want >= %d", d.SchemaVersion, minSchemaVersion)
	}
	defined := checkVariables(t, d.Templating.List)
	ids := map[int]string{}
	for _, p := range d.allPanels() {
		if other, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("panel %q: id %d (also %q); ids must be unique and positive", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.Type != "row" {
			checkPanel(t, p, defined)
		}
	}
	checkLayout(t, d.allPanels())
}

// checkVariables checks the templating list and returns the variables'
// names: first the Prometheus datasource variable, then label_values
// queries on it, each using only the variables before it.
func checkVariables(t *testing.T, vars []variable) []string {
	t.Helper()
	if len(vars) == 0 || vars[0].Type != "datasource" || vars[0].Name != "datasource" || string(vars[0].Query) != `"prometheus"` {
		t.Fatalf("the first variable must be the datasource variable \"datasource\" of type prometheus; got %+v", vars)
	}
	defined := []string{"datasource"}
	for _, v := range vars[1:] {
		q := v.query()
		if v.Type != "query" || v.Datasource == nil || *v.Datasource != promDatasource {
			t.Errorf("variable %s: type %q datasource %+v, want a query on %+v", v.Name, v.Type, v.Datasource, promDatasource)
		}
		if _, _, err := parseLabelValues(q); err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
		}
		for _, r := range refs(q) {
			if !slices.Contains(defined, r) {
				t.Errorf("variable %s: query %q uses $%s, not defined before it", v.Name, q, r)
			}
		}
		if !v.Multi || !v.IncludeAll {
			t.Errorf("variable %s: want multi-value with All", v.Name)
		}
		defined = append(defined, v.Name)
	}
	return defined
}

// checkPanel checks a panel's texts, datasource and queries.
func checkPanel(t *testing.T, p panel, defined []string) {
	t.Helper()
	if p.Title == "" || len(p.Description) < 20 {
		t.Errorf("panel %d: title %q and a description are required", p.ID, p.Title)
	}
	if p.Datasource == nil || *p.Datasource != promDatasource {
		t.Errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, promDatasource)
	}
	if len(p.Targets) == 0 {
		t.Errorf("panel %q: no query", p.Title)
	}
	refIDs := map[string]bool{}
	for _, q := range p.Targets {
		if q.RefID == "" || refIDs[q.RefID] {
			t.Errorf("panel %q: refId %q empty or repeated", p.Title, q.RefID)
		}
		refIDs[q.RefID] = true
		if q.Datasource == nil || *q.Datasource != promDatasource {
			t.Errorf("panel %q query %s: datasource %+v, want %+v", p.Title, q.RefID, q.Datasource, promDatasource)
		}
		if strings.TrimSpace(q.Expr) == "" || q.LegendFormat == "" {
			t.Errorf("panel %q query %s: expr and legendFormat are required", p.Title, q.RefID)
		}
		for _, r := range refs(q.Expr) {
			if _, builtin := builtins[r]; !builtin && !slices.Contains(defined, r) {
				t.Errorf("panel %q query %s: $%s is not a dashboard variable", p.Title, q.RefID, r)
			}
		}
	}
}

// checkLayout checks that every panel fits the 24-column grid and that no
// two panels overlap.
func checkLayout(t *testing.T, ps []panel) {
	t.Helper()
	taken := map[[2]int]string{}
	for _, p := range ps {
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
			continue
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[[2]int{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at x=%d y=%d", other, p.Title, x, y)
					return
				}
				taken[[2]int{x, y}] = p.Title
			}
		}
	}
}
