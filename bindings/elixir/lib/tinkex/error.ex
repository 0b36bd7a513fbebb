defmodule Tinkex.Error do
  @moduledoc """
  A failed call or operation.

  * `kind`: the core's error kind — `:user`, `:transient`, `:fatal`, `:billing`, `:expired`,
    `:cancelled`, `:timeout`, `:no_progress`, `:session_expired`, `:auth`, `:panic` — or a
    caller-error kind of the C ABI — `:null_arg`, `:invalid_arg`, `:invalid_utf8`,
    `:invalid_json`, `:already_taken`, `:wrong_state`, `:wrong_type`, `:shut_down`,
    `:internal`. The binding adds `:await_timeout` (`Tinkex.Future.await/2` gave up waiting;
    the operation still runs), `:wrong_process` (awaited from a process that did not
    submit it) and `:out_of_memory` (status `:internal`: an allocation of the NIF failed;
    the call did nothing, or the operation's result could not be delivered).
  * `status`: the C ABI status as an atom (`:user`, `:connect`, `:timeout`, `:io`, ...),
    `status_code` its stable integer value (`TINKEX_STATUS_*`).
  * `http_status`: the HTTP status of the answer that caused it, or `nil`.
  * `retryable?`: whether the same request may succeed if retried (the client already
    retried it under its policy).
  * `request_id`: the server request (future) id involved, or `nil`.
  * `category`: the server's category of a failed future (`"user"`, `"server"`, ...;
    `tinkex_error_category` of the C ABI), or `nil` when the error has none.

  It is an exception, so `raise error` works; the `!` functions raise it.
  """

  defexception [
    :kind,
    :status,
    :status_code,
    :message,
    :http_status,
    :request_id,
    :category,
    retryable?: false
  ]

  @type kind ::
          :user
          | :transient
          | :fatal
          | :billing
          | :expired
          | :cancelled
          | :timeout
          | :no_progress
          | :session_expired
          | :auth
          | :panic
          | :null_arg
          | :invalid_arg
          | :invalid_utf8
          | :invalid_json
          | :already_taken
          | :wrong_state
          | :wrong_type
          | :shut_down
          | :internal
          | :await_timeout
          | :wrong_process
          | :out_of_memory

  @type t :: %__MODULE__{
          kind: kind | atom,
          status: atom,
          status_code: integer,
          message: String.t(),
          http_status: pos_integer | nil,
          retryable?: boolean,
          request_id: String.t() | nil,
          category: String.t() | nil
        }

  # Status values by name, from include/tinkex.h (Tinkex.Constants is generated from it).
  @statuses Map.new(Tinkex.Constants.statuses(), fn {name, value} -> {value, name} end)

  @doc "The status atom of a `TINKEX_STATUS_*` value (`:unknown` for others)."
  @spec status_atom(integer) :: atom
  def status_atom(code), do: Map.get(@statuses, code, :unknown)

  @impl true
  def message(%__MODULE__{kind: kind, message: msg, http_status: http}) do
    http = if http, do: " (HTTP #{http})", else: ""
    "[#{kind}] #{msg}#{http}"
  end

  @doc false
  # The NIF's error tuple: {StatusInt, KindAtom, Message, HttpStatus, Retryable, RequestId,
  # Category}.
  def from_nif({code, kind, message, http, retryable, request_id, category}) do
    %__MODULE__{
      kind: kind,
      status: status_atom(code),
      status_code: code,
      message: message,
      http_status: if(http == 0, do: nil, else: http),
      retryable?: retryable,
      request_id: request_id,
      category: category
    }
  end

  @doc false
  def new(kind, status, message) do
    %__MODULE__{
      kind: kind,
      status: status,
      status_code: Map.get(Tinkex.Constants.statuses(), status, -1),
      message: message
    }
  end
end
