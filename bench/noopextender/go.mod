module temper.codes/bench/noopextender

go 1.26
