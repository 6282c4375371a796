package schedule

import "fmt"

// Level is the level a run asks for. The strings are the catalog's levels
// (catalog.Level), so a run's level converts to a job's with a plain
// conversion and reads the same in a job list.
type Level string

const (
	Full         Level = "full"
	Differential Level = "differential"
	Incremental  Level = "incremental"
	// SyntheticFull folds the last full and the backups after it into a
	// new full on the storage node, without the client (Bacula's
	// VirtualFull): it copies nothing new from the client.
	SyntheticFull Level = "synthetic-full"
)

// Valid reports whether l is one of the four levels.
func (l Level) Valid() bool { return l.rank() > 0 }

// rank orders the levels by how much a run of that level copies, so that when
// two rules fire at the same minute the one that copies more wins: a full
// covers what a differential would, and a differential what an incremental
// would, never the other way round.
func (l Level) rank() int {
	switch l {
	case Full:
		return 4
	case SyntheticFull:
		return 3
	case Differential:
		return 2
	case Incremental:
		return 1
	}
	return 0
}

// Higher reports whether l copies more than m (full > synthetic full >
// differential > incremental): a synthetic full's run makes the chain one
// session long, as a full does, but brings nothing new from the client.
func (l Level) Higher(m Level) bool { return l.rank() > m.rank() }

// ParseLevel reads a level as an administrator writes it: the full word or
// the short forms Bacula and Bareos users type.
func ParseLevel(s string) (Level, error) {
	if l, ok := levelWords[lower(s)]; ok {
		return l, nil
	}
	return "", fmt.Errorf("level %q is not known: use full, synthetic-full, differential or incremental", s)
}

var levelWords = map[string]Level{
	"full":           Full,
	"synthetic-full": SyntheticFull, "synthetic": SyntheticFull, "virtualfull": SyntheticFull,
	"differential": Differential, "diff": Differential,
	"incremental": Incremental, "incr": Incremental, "inc": Incremental,
}

// lower folds ASCII only: the grammar is ASCII, and folding anything else
// would make a column in an error message point at the wrong byte.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
