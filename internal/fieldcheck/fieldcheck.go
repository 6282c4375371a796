// Package fieldcheck holds a conversion between two structs to carrying
// every field. Where one thing is declared in several packages that may
// not import each other (a part of a session is volume.PartResult on the
// storage node, wire.SessionPart on the wire, catalog.Part in the
// catalog), each conversion has a test that Fills the source, converts,
// and checks that nothing was Carried wrong: a field one of them gains
// then fails the test until the others carry it too (a tape part's Torn
// was once dropped on the way, and the catalog never learned of it).
package fieldcheck

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
)

// Fill sets every exported field of the struct p points to a value of
// its own: not the zero value, and different from the other fields'.
func Fill(p any) {
	v := reflect.ValueOf(p).Elem()
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		f := v.Field(i)
		n := i + 1
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(int64(n))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(uint64(n))
		case reflect.Float32, reflect.Float64:
			f.SetFloat(float64(n) + 0.5)
		case reflect.String:
			f.SetString(fmt.Sprintf("field-%d", n))
		case reflect.Array:
			for j := range f.Len() {
				f.Index(j).SetUint(uint64(n*31 + j))
			}
		default:
			panic(fmt.Sprintf("fieldcheck: field %s of %s is a %s, which Fill does not fill", v.Type().Field(i).Name, v.Type(), f.Kind()))
		}
	}
}

// Carried checks that the struct to holds every exported field of the
// struct from, by name and with the same value, and no field from does
// not have. except names the fields of from that the conversion leaves out
// on purpose.
func Carried(from, to any, except ...string) error {
	fv, tv := reflect.ValueOf(from), reflect.ValueOf(to)
	var errs []error
	for i := range fv.NumField() {
		name := fv.Type().Field(i).Name
		if !fv.Type().Field(i).IsExported() || slices.Contains(except, name) {
			continue
		}
		got := tv.FieldByName(name)
		switch {
		case !got.IsValid():
			errs = append(errs, fmt.Errorf("%s has no field %s: %s drops it", tv.Type(), name, fv.Type()))
		case !got.CanConvert(fv.Field(i).Type()) || !got.Convert(fv.Field(i).Type()).Equal(fv.Field(i)):
			errs = append(errs, fmt.Errorf("%s.%s is %v, not %v as in %s", tv.Type(), name, got, fv.Field(i), fv.Type()))
		}
	}
	for i := range tv.NumField() {
		name := tv.Type().Field(i).Name
		if tv.Type().Field(i).IsExported() && !fv.FieldByName(name).IsValid() {
			errs = append(errs, fmt.Errorf("%s has a field %s that %s does not: where does it come from?", tv.Type(), name, fv.Type()))
		}
	}
	return errors.Join(errs...)
}
