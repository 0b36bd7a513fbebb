defmodule Tinkex.JSON do
  @moduledoc """
  A small JSON encoder and decoder (Hex is not available, and Elixir 1.14 / OTP 25 ship
  none). Requests and results cross the C ABI as JSON text; this module is the only place
  that reads or writes it.

  * Decoding gives maps with string keys, lists, binaries, integers, floats, `true`,
    `false` and `nil`. Strings are copied out of the input, so a decoded result never keeps
    the (possibly large) result binary alive.
  * Encoding accepts maps (atom or string keys), keyword-free lists, binaries, numbers,
    booleans, `nil` and other atoms (as strings). Map entries whose value is `nil` are
    written as `null`; callers drop them when the API wants them absent.

  Both run as ordinary Elixir code in the calling process, so they are preempted like any
  other code and never hold a scheduler.
  """

  import Bitwise, only: [<<<: 2]

  # ---------------------------------------------------------------------------------------
  # Encoding
  # ---------------------------------------------------------------------------------------

  @doc "Encodes a term as JSON iodata. Raises `ArgumentError` for unsupported terms."
  @spec encode_to_iodata!(term) :: iodata
  def encode_to_iodata!(term), do: enc(term)

  @doc "Encodes a term as a JSON binary. Raises `ArgumentError` for unsupported terms."
  @spec encode!(term) :: binary
  def encode!(term), do: IO.iodata_to_binary(enc(term))

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(a) when is_atom(a), do: enc_string(Atom.to_string(a))
  defp enc(s) when is_binary(s), do: enc_string(s)
  defp enc(i) when is_integer(i), do: Integer.to_string(i)
  defp enc(f) when is_float(f), do: :erlang.float_to_binary(f, [:short])
  defp enc([]), do: "[]"
  defp enc([h | t]), do: ["[", enc(h) | enc_rest(t)]

  defp enc(%_{} = s) do
    raise ArgumentError, "Tinkex.JSON cannot encode the struct #{inspect(s.__struct__)}"
  end

  defp enc(m) when is_map(m) do
    case :maps.to_list(m) do
      [] -> "{}"
      [{k, v} | t] -> ["{", enc_key(k), ":", enc(v) | enc_pairs(t)]
    end
  end

  defp enc(other), do: raise(ArgumentError, "Tinkex.JSON cannot encode #{inspect(other)}")

  defp enc_rest([]), do: ["]"]
  defp enc_rest([h | t]), do: [",", enc(h) | enc_rest(t)]

  defp enc_pairs([]), do: ["}"]
  defp enc_pairs([{k, v} | t]), do: [",", enc_key(k), ":", enc(v) | enc_pairs(t)]

  defp enc_key(k) when is_binary(k), do: enc_string(k)
  defp enc_key(k) when is_atom(k), do: enc_string(Atom.to_string(k))
  defp enc_key(k) when is_integer(k), do: enc_string(Integer.to_string(k))
  defp enc_key(k), do: raise(ArgumentError, "Tinkex.JSON cannot encode the key #{inspect(k)}")

  @escapes Enum.map(0..31, &<<&1>>) ++ ["\"", "\\"]

  defp enc_string(s) do
    case :binary.match(s, @escapes) do
      :nomatch -> [?", s, ?"]
      _ -> [?", escape(s, ""), ?"]
    end
  end

  defp escape(<<?", rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\\"">>)
  defp escape(<<?\\, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\\\">>)
  defp escape(<<?\n, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\n">>)
  defp escape(<<?\r, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\r">>)
  defp escape(<<?\t, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\t">>)

  defp escape(<<c, rest::binary>>, acc) when c < 32 do
    hex = c |> Integer.to_string(16) |> String.pad_leading(4, "0")
    escape(rest, <<acc::binary, "\\u", hex::binary>>)
  end

  defp escape(<<c, rest::binary>>, acc), do: escape(rest, <<acc::binary, c>>)
  defp escape(<<>>, acc), do: acc

  # ---------------------------------------------------------------------------------------
  # Decoding
  # ---------------------------------------------------------------------------------------

  @doc "Decodes a JSON binary: `{:ok, term}` or `{:error, {:invalid_json, byte_offset}}`."
  @spec decode(binary) :: {:ok, term} | {:error, {:invalid_json, non_neg_integer}}
  def decode(bin) when is_binary(bin) do
    try do
      {v, rest} = value(ws(bin))

      case ws(rest) do
        "" -> {:ok, v}
        rest -> {:error, {:invalid_json, byte_size(bin) - byte_size(rest)}}
      end
    catch
      {:json_error, rest} -> {:error, {:invalid_json, byte_size(bin) - byte_size(rest)}}
    end
  end

  @doc "Decodes a JSON binary; raises `ArgumentError` when it is not valid JSON."
  @spec decode!(binary) :: term
  def decode!(bin) do
    case decode(bin) do
      {:ok, v} -> v
      {:error, {:invalid_json, at}} -> raise ArgumentError, "invalid JSON at byte #{at}"
    end
  end

  defp ws(<<c, rest::binary>>) when c in [?\s, ?\n, ?\r, ?\t], do: ws(rest)
  defp ws(bin), do: bin

  defp value(<<?{, rest::binary>>), do: object(ws(rest))
  defp value(<<?[, rest::binary>>), do: array(ws(rest))
  defp value(<<?", rest::binary>>), do: string(rest)
  defp value(<<"true", rest::binary>>), do: {true, rest}
  defp value(<<"false", rest::binary>>), do: {false, rest}
  defp value(<<"null", rest::binary>>), do: {nil, rest}
  defp value(<<c, _::binary>> = bin) when c in ?0..?9 or c == ?-, do: number(bin)
  defp value(bin), do: throw({:json_error, bin})

  defp object(<<?}, rest::binary>>), do: {%{}, rest}
  defp object(bin), do: pairs(bin, [])

  defp pairs(<<?", rest::binary>>, acc) do
    {k, rest} = string(rest)

    case ws(rest) do
      <<?:, rest::binary>> ->
        {v, rest} = value(ws(rest))

        case ws(rest) do
          <<?,, rest::binary>> -> pairs(ws(rest), [{k, v} | acc])
          <<?}, rest::binary>> -> {:maps.from_list([{k, v} | acc]), rest}
          rest -> throw({:json_error, rest})
        end

      rest ->
        throw({:json_error, rest})
    end
  end

  defp pairs(bin, _), do: throw({:json_error, bin})

  defp array(<<?], rest::binary>>), do: {[], rest}
  defp array(bin), do: elements(bin, [])

  defp elements(bin, acc) do
    {v, rest} = value(bin)

    case ws(rest) do
      <<?,, rest::binary>> -> elements(ws(rest), [v | acc])
      <<?], rest::binary>> -> {:lists.reverse(acc, [v]), rest}
      rest -> throw({:json_error, rest})
    end
  end

  # Strings: copy the run up to the closing quote; escapes take the slow path.
  defp string(bin) do
    case :binary.match(bin, ["\"", "\\"]) do
      {pos, 1} ->
        case bin do
          <<s::binary-size(pos), ?", rest::binary>> -> {:binary.copy(s), rest}
          <<s::binary-size(pos), ?\\, rest::binary>> -> escaped(rest, [s])
        end

      :nomatch ->
        throw({:json_error, bin})
    end
  end

  defp escaped(<<c, rest::binary>>, acc) do
    case c do
      ?" -> more(rest, [acc, ?"])
      ?\\ -> more(rest, [acc, ?\\])
      ?/ -> more(rest, [acc, ?/])
      ?b -> more(rest, [acc, ?\b])
      ?f -> more(rest, [acc, ?\f])
      ?n -> more(rest, [acc, ?\n])
      ?r -> more(rest, [acc, ?\r])
      ?t -> more(rest, [acc, ?\t])
      ?u -> unicode(rest, acc)
      _ -> throw({:json_error, rest})
    end
  end

  defp escaped(bin, _), do: throw({:json_error, bin})

  defp unicode(<<h::binary-size(4), "\\u", l::binary-size(4), rest::binary>> = bin, acc) do
    hi = hex(h, bin)

    if hi in 0xD800..0xDBFF do
      lo = hex(l, bin)
      cp = 0x10000 + ((hi - 0xD800) <<< 10) + (lo - 0xDC00)
      more(rest, [acc, <<cp::utf8>>])
    else
      more(<<"\\u", l::binary, rest::binary>>, [acc, <<hi::utf8>>])
    end
  end

  defp unicode(<<h::binary-size(4), rest::binary>> = bin, acc) do
    more(rest, [acc, <<hex(h, bin)::utf8>>])
  end

  defp unicode(bin, _), do: throw({:json_error, bin})

  defp hex(h, bin) do
    case Integer.parse(h, 16) do
      {n, ""} -> n
      _ -> throw({:json_error, bin})
    end
  end

  defp more(bin, acc) do
    case :binary.match(bin, ["\"", "\\"]) do
      {pos, 1} ->
        case bin do
          <<s::binary-size(pos), ?", rest::binary>> -> {IO.iodata_to_binary([acc, s]), rest}
          <<s::binary-size(pos), ?\\, rest::binary>> -> escaped(rest, [acc, s])
        end

      :nomatch ->
        throw({:json_error, bin})
    end
  end

  # Numbers: measure the token, then convert it with one BIF call.
  defp number(bin) do
    {len, float?} = num_len(bin, 0, false)
    <<tok::binary-size(len), rest::binary>> = bin

    v =
      try do
        if float?, do: to_float(tok), else: :erlang.binary_to_integer(tok)
      rescue
        ArgumentError -> throw({:json_error, bin})
      end

    {v, rest}
  end

  defp num_len(<<c, rest::binary>>, n, f) when c in ?0..?9 or c == ?-, do: num_len(rest, n + 1, f)
  defp num_len(<<c, rest::binary>>, n, _) when c in [?., ?e, ?E, ?+], do: num_len(rest, n + 1, true)
  defp num_len(_, n, f), do: {n, f}

  defp to_float(tok) do
    :erlang.binary_to_float(tok)
  rescue
    ArgumentError ->
      # Erlang wants digits on both sides of a '.': "1e-7" -> "1.0e-7".
      case :binary.split(tok, ["e", "E"]) do
        [m, e] ->
          m = if String.contains?(m, "."), do: m, else: m <> ".0"
          :erlang.binary_to_float(m <> "e" <> e)

        [m] ->
          :erlang.binary_to_float(m <> ".0")
      end
  end
end
