package fieldcheck

import (
	"strings"
	"testing"
)

type part struct {
	ID     [4]byte
	Start  int64
	Name   string
	Torn   bool
	Blocks uint32
}

type wirePart struct {
	ID    [4]byte
	Start int64
	Name  string
	Torn  bool
}

func TestCarried(t *testing.T) {
	var p part
	Fill(&p)
	if p.Start == 0 || p.Name == "" || !p.Torn || p.ID == [4]byte{} || p.Blocks == 0 {
		t.Fatalf("Fill left a zero field: %+v", p)
	}
	whole := wirePart{p.ID, p.Start, p.Name, p.Torn}
	if err := Carried(p, whole, "Blocks"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		to   any
		want string
	}{
		{wirePart{p.ID, p.Start, p.Name, false}, "Torn is false"},
		{struct {
			ID    [4]byte
			Start int64
			Name  string
		}{p.ID, p.Start, p.Name}, "no field Torn"},
		{struct {
			wirePart
			Extra int
		}{whole, 1}, "a field Extra"},
	} {
		if err := Carried(p, c.to, "Blocks"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.to, err, c.want)
		}
	}
	if err := Carried(p, whole); err == nil || !strings.Contains(err.Error(), "no field Blocks") {
		t.Errorf("a dropped field not excepted: %v", err)
	}
}
