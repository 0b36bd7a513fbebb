defmodule Tinkex.Future do
  @moduledoc """
  One submitted operation.

  Every network operation of the binding returns `{:ok, %Tinkex.Future{}}` at once. When the
  operation finishes, libtinkex's dispatcher thread posts

      {:tinkex, ref, result}

  to the process that submitted it (`future.ref` is that `ref`). `await/2` is a plain
  `receive` on that message: it never blocks a scheduler, and a timeout leaves the
  operation running (await again later, or `cancel/1` it). You may also `receive` the
  message yourself and pass its `result` to `resolve/2`.

  Futures belong to the process that submitted them: only it receives the completion.
  Dropping a future (letting it be garbage collected) does not cancel the operation; it
  completes and its message is delivered (or discarded if the process is gone).
  """

  alias Tinkex.Error

  defstruct [:ref, :handle, :owner, :decode, :op]

  @type t :: %__MODULE__{
          ref: reference,
          handle: reference | {:custom, pid, reference},
          owner: pid,
          decode: (term -> {:ok, term} | {:error, Error.t()}),
          op: atom
        }

  @doc """
  Waits up to `timeout` ms (or `:infinity`) for the result: `{:ok, value}` or
  `{:error, %Tinkex.Error{}}`. On timeout returns `{:error, %Tinkex.Error{kind:
  :await_timeout}}` and the operation keeps running; the result can still be awaited.
  """
  @spec await(t, timeout) :: {:ok, term} | {:error, Error.t()}
  def await(future, timeout \\ :infinity)

  def await(%__MODULE__{owner: owner} = f, _timeout) when owner != self() do
    {:error,
     Error.new(
       :wrong_process,
       :wrong_state,
       "#{f.op} was submitted by #{inspect(owner)}; only that process receives its result"
     )}
  end

  def await(%__MODULE__{ref: ref} = f, timeout) do
    receive do
      {:tinkex, ^ref, result} -> resolve(f, result)
    after
      timeout ->
        {:error,
         Error.new(:await_timeout, :pending, "#{f.op} did not finish within #{timeout} ms; it is still running")}
    end
  end

  @doc "Like `await/2` but returns the value or raises the `Tinkex.Error`."
  @spec await!(t, timeout) :: term
  def await!(future, timeout \\ :infinity) do
    case await(future, timeout) do
      {:ok, v} -> v
      {:error, e} -> raise e
    end
  end

  @doc """
  Awaits every future with one overall `timeout`; returns their results in the order of
  `futures` (whatever the completion order).
  """
  @spec await_many([t], timeout) :: [{:ok, term} | {:error, Error.t()}]
  def await_many(futures, timeout \\ :infinity)

  def await_many(futures, :infinity), do: Enum.map(futures, &await(&1, :infinity))

  def await_many(futures, timeout) when is_integer(timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Enum.map(futures, fn f ->
      await(f, max(deadline - System.monotonic_time(:millisecond), 0))
    end)
  end

  @doc "Returns the result if it has arrived, else `:pending` (never waits)."
  @spec poll(t) :: {:ok, term} | {:error, Error.t()} | :pending
  def poll(%__MODULE__{ref: ref} = f) do
    receive do
      {:tinkex, ^ref, result} -> resolve(f, result)
    after
      0 -> :pending
    end
  end

  @doc """
  Cancels the operation: if it has not finished, it completes with
  `%Tinkex.Error{kind: :cancelled}` and its HTTP work stops. Idempotent; never blocks.
  For `TrainingClient.forward_backward_custom/4` it cancels the forward pass (once the
  loss function has run, the backward is no longer cancelled).
  """
  @spec cancel(t) :: :ok
  def cancel(%__MODULE__{handle: {:custom, _pid, fwd}}), do: Tinkex.Native.future_cancel(fwd)
  def cancel(%__MODULE__{handle: h}), do: Tinkex.Native.future_cancel(h)

  @doc "Whether the operation has finished (its message may still be in flight)."
  @spec done?(t) :: boolean
  def done?(%__MODULE__{handle: {:custom, pid, _fwd}}), do: not Process.alive?(pid)
  def done?(%__MODULE__{handle: h}), do: Tinkex.Native.future_is_done(h)

  @doc "Turns the `result` of a `{:tinkex, ref, result}` message into the awaited value."
  @spec resolve(t, term) :: {:ok, term} | {:error, Error.t()}
  def resolve(%__MODULE__{decode: decode}, {:ok, payload}), do: decode.(payload)
  def resolve(_f, {:error, e}), do: {:error, Error.from_nif(e)}

  @doc false
  # Wraps a submit NIF's answer.
  def submitted({:ok, ref, handle}, op, decode) do
    {:ok, %__MODULE__{ref: ref, handle: handle, owner: self(), decode: decode, op: op}}
  end

  def submitted({:error, e}, _op, _decode), do: {:error, Error.from_nif(e)}

  @doc false
  # A decoder for JSON results: `fun` maps the decoded JSON to the value.
  def json(fun) do
    fn payload ->
      case Tinkex.JSON.decode(payload) do
        {:ok, v} -> {:ok, fun.(v)}
        {:error, {:invalid_json, at}} -> {:error, Error.new(:internal, :internal, "libtinkex returned invalid JSON (byte #{at})")}
      end
    end
  end
end

defimpl Inspect, for: Tinkex.Future do
  def inspect(f, _opts), do: "#Tinkex.Future<#{f.op} #{:erlang.ref_to_list(f.ref)}>"
end
