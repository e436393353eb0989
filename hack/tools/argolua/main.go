// Command argolua runs an Argo CD resource customization script the way Argo CD does: on
// gopher-lua (Lua 5.1), with the object as the global `obj`.
//
//	argolua health SCRIPT < object.json     prints {"status": ..., "message": ...}
//	argolua discovery SCRIPT < object.json  prints the actions the script offers
//	argolua action SCRIPT < object.json     prints the object the action returns
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	lua "github.com/yuin/gopher-lua"
)

func main() {
	if len(os.Args) != 3 {
		fail("usage: argolua health|discovery|action SCRIPT < object.json")
	}
	mode, script := os.Args[1], os.Args[2]
	var obj interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&obj); err != nil {
		fail("reading the object: %v", err)
	}
	l := lua.NewState()
	defer l.Close()
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoFile(script); err != nil {
		fail("running %s: %v", script, err)
	}
	ret := l.Get(-1)
	var out interface{}
	switch mode {
	case "health":
		t, ok := ret.(*lua.LTable)
		if !ok {
			fail("%s returned %s, not a table", script, ret.Type())
		}
		out = map[string]interface{}{
			"status":  lua.LVAsString(t.RawGetString("status")),
			"message": lua.LVAsString(t.RawGetString("message")),
		}
	case "discovery", "action":
		out = fromLua(ret)
	default:
		fail("unknown mode %q", mode)
	}
	line, err := json.Marshal(out)
	if err != nil {
		fail("writing the result: %v", err)
	}
	fmt.Println(string(line))
}

func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.RawSetString(k, toLua(l, v[k]))
		}
		return t
	}
	fail("unexpected JSON value %T", v)
	return lua.LNil
}

// fromLua turns a table with only the keys 1..n into an array and any other table into an object.
func fromLua(v lua.LValue) interface{} {
	switch v := v.(type) {
	case *lua.LNilType:
		return nil
	case lua.LBool:
		return bool(v)
	case lua.LNumber:
		return float64(v)
	case lua.LString:
		return string(v)
	case *lua.LTable:
		if n := v.MaxN(); n > 0 {
			items := make([]interface{}, 0, n)
			for i := 1; i <= n; i++ {
				items = append(items, fromLua(v.RawGetInt(i)))
			}
			return items
		}
		m := map[string]interface{}{}
		v.ForEach(func(k, val lua.LValue) { m[lua.LVAsString(k)] = fromLua(val) })
		return m
	}
	fail("unexpected Lua value %s", v.Type())
	return nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "argolua: "+format+"\n", args...)
	os.Exit(1)
}
