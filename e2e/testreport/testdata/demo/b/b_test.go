package b

import "testing"

func TestOK(t *testing.T)        {}
func TestSkipMulti(t *testing.T) { t.Skip("line one\nline two") }
func TestSkipNow(t *testing.T)   { t.SkipNow() }
func BenchmarkX(b *testing.B)    { b.Skip("bench skipped") }
