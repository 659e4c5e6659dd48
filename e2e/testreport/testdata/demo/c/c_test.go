package c

import "testing"

func TestBroken(t *testing.T) { undefined() }
