package a

import (
	"fmt"
	"testing"
)

func TestMain(m *testing.M) { fmt.Println("a: setup line"); m.Run() }

func TestPass(t *testing.T) { t.Log("passing log") }
func TestSkip(t *testing.T) { t.Log("a log first"); t.Skip("needs root: creates network namespaces") }
func TestFail(t *testing.T) { t.Log("before"); t.Error("boom") }
func TestSub(t *testing.T) {
	t.Run("ok", func(t *testing.T) {})
	t.Run("skipped", func(t *testing.T) { t.Skipf("kernel lacks %s", "tcx") })
	t.Run("bad", func(t *testing.T) { t.Fatal("sub failed") })
}
