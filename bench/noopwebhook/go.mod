module temper.codes/bench/noopwebhook

go 1.26
