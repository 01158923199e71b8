package trace

import "errors"

// UsageError is bad input: the command line names something that is wrong
// or unavailable. Nothing was changed; the CLI exits with code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// IsUsage reports whether err is a UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

func usagef(format string, args ...any) error {
	return &UsageError{Msg: sprintf(format, args...)}
}
