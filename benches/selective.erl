%% selective.vasm on BEAM: a process waits in a selective receive for {reply, _} while M other
%% messages arrive one at a time. Usage: erlc selective.erl && erl -noshell -s selective main M -s init stop
-module(selective).
-export([main/1]).

main([Arg]) ->
    M = list_to_integer(atom_to_list(Arg)),
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    spawn(fun() -> cast(Self, 0, M) end),
    R = receive {reply, X} -> X end,
    T1 = erlang:monotonic_time(microsecond),
    io:format("selective ~p result=~p us=~p~n", [M, R, T1 - T0]).

cast(To, I, M) when I >= M -> To ! {reply, M};
cast(To, I, M) -> To ! {cast, I}, cast(To, I + 1, M).
