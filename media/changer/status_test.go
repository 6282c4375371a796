package changer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// summary renders an inventory one element a token: d0=A00003L9<3 is drive
// 0 holding A00003L9 loaded from element 3 (<? when unknown), s5=? a full
// slot with no tag, m24=- an empty mail slot; tags with blanks are quoted,
// an alternate tag follows a '/'.
func summary(inv *Inventory) string {
	var b strings.Builder
	tok := func(prefix string, e Element) {
		fmt.Fprintf(&b, "%s%d=", prefix, e.Number)
		switch {
		case !e.Full:
			b.WriteString("-")
		case e.Barcode == "":
			b.WriteString("?")
		case strings.ContainsAny(e.Barcode, " \t"):
			fmt.Fprintf(&b, "%q", e.Barcode)
		default:
			b.WriteString(e.Barcode)
		}
		if e.AltBarcode != "" {
			b.WriteString("/" + e.AltBarcode)
		}
		if e.Kind == KindDrive && e.Full {
			if e.Source == 0 {
				b.WriteString("<?")
			} else {
				fmt.Fprintf(&b, "<%d", e.Source)
			}
		}
		b.WriteString(" ")
	}
	for _, e := range inv.Drives {
		tok("d", e)
	}
	b.WriteString("|")
	// Storage elements in number order, whatever their kind.
	all := append(append([]Element(nil), inv.Slots...), inv.MailSlots...)
	for n := 1; n <= len(all); n++ {
		e, _ := inv.Storage(n)
		b.WriteString(" ")
		if e.Kind == KindMailSlot {
			tok("m", e)
		} else {
			tok("s", e)
		}
		s := b.String()
		b.Reset()
		b.WriteString(strings.TrimSuffix(s, " "))
	}
	return strings.TrimSpace(b.String())
}

func TestParseStatusRecorded(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"lto9-2drives-24slots-2mail.txt",
			"d0=A00003L9<3 d1=- | s1=A00001L9 s2=A00002L9 s3=- s4=A00004L9 s5=A00005L9 s6=A00006L9 s7=A00007L9 s8=A00008L9 " +
				"s9=- s10=- s11=- s12=- s13=- s14=- s15=- s16=- s17=- s18=- s19=- s20=- s21=- s22=CLN001L1 m23=B00001L9 m24=-"},
		{"dds-autoloader-no-reader.txt",
			"d0=?<2 | s1=? s2=- s3=? s4=? s5=- s6=?"},
		{"tags-with-blanks.txt",
			`d0="WEEKLY 01"<4 d1=- | s1="CLN 001" s2="MONTHLY 2026 03" s3=? s4=- s5=? s6=- s7=A00007L8 s8=- s9=- m10=-`},
		{"unknown-source.txt",
			"d0=B00010L8<? d1=?<? d2=B00007L8<7 | s1=B00001L8 s2=B00002L8 s3=- s4=- s5=B00005L8 s6=- s7=- s8=-"},
		{"alternate-tags.txt",
			"d0=C00001L7/0001<1 | s1=- s2=C00002L7/0002 s3=?/ALT003 s4=C00004L7 m5=C00005L7/0005"},
		{"spacing-variants.txt",
			"d0=D00002L6<2 d1=D00005L6<5 | s1=D00001L6 s2=- s3=D00003L6 s4=D00004L6/X4 s5=- m6=D00006L6"},
		{"unit-attention-stderr-mixed.txt",
			"d0=- | s1=000711L4 s2=A00008L5 s3=A00034L5 s4=A00014L5 s5=A00036L5 s6=A00025L5 s7=000218L5"},
		{"mail-slots-first-4drives.txt",
			"d0=E00002L8<2 d1=- d2=E00009L8<9 d3=- | m1=E00001L8 m2=- m3=- m4=- s5=E00005L8 s6=- s7=E00007L8 s8=E00008L8 s9=- " +
				"s10=E00010L8 s11=E00011L8 s12=- s13=E00013L8 s14=E00014L8 s15=- s16=E00016L8 s17=E00017L8 s18=- s19=E00019L8 s20=E00020L8"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, err := os.ReadFile(filepath.Join("testdata", "status", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			for _, variant := range []struct {
				name string
				out  []byte
			}{
				{"LF", out},
				// Captures pasted from Windows terminals, or run through
				// ssh -t, end their lines with CRLF.
				{"CRLF", bytes.ReplaceAll(out, []byte("\n"), []byte("\r\n"))},
				{"no final newline", bytes.TrimSuffix(out, []byte("\n"))},
			} {
				inv, err := ParseStatus(variant.out)
				if err != nil {
					t.Fatalf("%s: %v", variant.name, err)
				}
				if got := summary(inv); got != tc.want {
					t.Errorf("%s:\n got %s\nwant %s", variant.name, got, tc.want)
				}
			}
		})
	}
}

func TestParseStatusCounts(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "status", "lto9-2drives-24slots-2mail.txt"))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := ParseStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Drives) != 2 || len(inv.Slots) != 22 || len(inv.MailSlots) != 2 {
		t.Fatalf("%d drives, %d slots, %d mail slots; want 2, 22, 2 (the header's 24 slots count the mail slots)", len(inv.Drives), len(inv.Slots), len(inv.MailSlots))
	}
	if e := inv.MailSlots[1]; e.Number != 24 || e.Kind != KindMailSlot || e.Full {
		t.Fatalf("last mail slot %+v", e)
	}
}

func TestParseStatusRefuses(t *testing.T) {
	const head = "  Storage Changer /dev/sg1:1 Drives, 3 Slots ( 1 Import/Export )\n"
	const drive = "Data Transfer Element 0:Empty\n"
	const slots = "      Storage Element 1:Empty\n      Storage Element 2:Full :VolumeTag=A1\n      Storage Element 3 IMPORT/EXPORT:Empty\n"
	for _, tc := range []struct {
		name, out string
		line      int
		reason    string
	}{
		{"empty", "", 0, "no \"Storage Changer"},
		{"usage text", "Usage:\n\tmtx --version\n", 1, "header first"},
		{"cut short", head + drive + "      Storage Element 1:Empty\n", 0, "3 storage elements, 1 are listed"},
		{"missing drive", head + slots, 0, "1 drives, 0 are listed"},
		{"slot out of order", head + drive + "      Storage Element 2:Empty\n", 3, "expected 1"},
		{"drive out of order", head + "Data Transfer Element 1:Empty\n", 2, "expected drive 0"},
		{"drive after slots", head + "      Storage Element 1:Empty\n" + drive, 3, "drive after"},
		{"mail slot count", strings.Replace(head, "( 1 Import", "( 2 Import", 1) + drive + slots, 0, "2 import/export slots, 1 are marked"},
		{"garbage line", head + drive + "Loading media from Storage Element 1 into drive 0...done\n" + slots, 3, "not an element line"},
		{"second header", head + drive + head + slots, 3, "second header"},
		{"junk after state", head + drive + "      Storage Element 1:Full junk\n", 3, "cannot read \"junk\""},
		{"more mail slots than slots", "  Storage Changer /dev/sg1:1 Drives, 1 Slots ( 2 Import/Export )\n", 1, "2 import/export slots among 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := ParseStatus([]byte(tc.out))
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("ParseStatus = %v, %v; want a *StatusError", inv, err)
			}
			if se.Line != tc.line || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %q (line %d); want line %d and %q", err, se.Line, tc.line, tc.reason)
			}
		})
	}
}

func TestParseStatusSourceOutOfRange(t *testing.T) {
	// A source past the library's own numbering cannot be unloaded to.
	out := "  Storage Changer /dev/sg1:1 Drives, 2 Slots ( 0 Import/Export )\n" +
		"Data Transfer Element 0:Full (Storage Element 40 Loaded):VolumeTag = A1\n" +
		"      Storage Element 1:Empty\n      Storage Element 2:Empty\n"
	inv, err := ParseStatus([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if inv.Drives[0].Source != 0 || inv.Drives[0].Barcode != "A1" {
		t.Fatalf("drive %+v; want barcode A1 and an unknown source", inv.Drives[0])
	}
}

// FuzzParseStatus holds that the parser never panics, and that what it
// accepts agrees with itself.
func FuzzParseStatus(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "status", "*.txt"))
	for _, name := range files {
		out, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out)
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		inv, err := ParseStatus(out)
		if err != nil {
			return
		}
		for i, d := range inv.Drives {
			if d.Number != i || d.Kind != KindDrive {
				t.Fatalf("drive %d is %+v", i, d)
			}
		}
		n := len(inv.Slots) + len(inv.MailSlots)
		for i := 1; i <= n; i++ {
			if _, ok := inv.Storage(i); !ok {
				t.Fatalf("storage element %d missing among %d", i, n)
			}
		}
		for _, d := range inv.Drives {
			if d.Source < 0 || d.Source > n {
				t.Fatalf("drive source %d outside 1..%d", d.Source, n)
			}
		}
	})
}
