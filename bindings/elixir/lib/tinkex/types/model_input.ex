defmodule Tinkex.Types.EncodedTextChunk do
  @moduledoc """
  Token ids: a list of integers or a binary of native-endian int64 values
  (`<<id::signed-native-64, ...>>`).
  """
  defstruct tokens: []
  @type t :: %__MODULE__{tokens: [integer] | binary}

  @doc false
  def token_list(%__MODULE__{tokens: l}) when is_list(l), do: l
  def token_list(%__MODULE__{tokens: b}), do: for(<<x::signed-native-64 <- b>>, do: x)

  @doc false
  def length(%__MODULE__{tokens: l}) when is_list(l), do: Kernel.length(l)
  def length(%__MODULE__{tokens: b}), do: div(byte_size(b), 8)
end

defmodule Tinkex.Types.ImageChunk do
  @moduledoc "An inline image: base64 `data`, `format` `:png` or `:jpeg`."
  defstruct [:data, format: :png, expected_tokens: nil]
  @type t :: %__MODULE__{data: String.t(), format: :png | :jpeg, expected_tokens: integer | nil}
end

defmodule Tinkex.Types.ImageAssetPointerChunk do
  @moduledoc "An image by reference: `location`, `format` `:png` or `:jpeg`."
  defstruct [:location, format: :png, expected_tokens: nil]
  @type t :: %__MODULE__{location: String.t(), format: :png | :jpeg, expected_tokens: integer | nil}
end

defmodule Tinkex.Types.ModelInput do
  @moduledoc """
  A model input: a list of chunks (token runs and images).

      ModelInput.from_ints([1, 2, 3])
      ModelInput.from_ints(<<1::signed-native-64, 2::signed-native-64>>)
  """
  alias Tinkex.Types.{EncodedTextChunk, ImageAssetPointerChunk, ImageChunk}

  defstruct chunks: []

  @type chunk :: EncodedTextChunk.t() | ImageChunk.t() | ImageAssetPointerChunk.t()
  @type t :: %__MODULE__{chunks: [chunk]}

  @doc "One token chunk from a list of ids or a native-endian int64 binary."
  @spec from_ints([integer] | binary) :: t
  def from_ints(tokens) when is_list(tokens) or is_binary(tokens),
    do: %__MODULE__{chunks: [%EncodedTextChunk{tokens: tokens}]}

  @doc "An empty input."
  @spec empty() :: t
  def empty, do: %__MODULE__{chunks: []}

  @doc "Appends token ids (extending the last token chunk) or a chunk."
  @spec append(t, [integer] | chunk) :: t
  def append(%__MODULE__{chunks: chunks} = mi, tokens) when is_list(tokens) do
    case List.last(chunks) do
      %EncodedTextChunk{} = last ->
        %{mi | chunks: List.replace_at(chunks, -1, %EncodedTextChunk{tokens: EncodedTextChunk.token_list(last) ++ tokens})}

      _ ->
        %{mi | chunks: chunks ++ [%EncodedTextChunk{tokens: tokens}]}
    end
  end

  def append(%__MODULE__{chunks: chunks} = mi, chunk) when is_struct(chunk),
    do: %{mi | chunks: chunks ++ [chunk]}

  @doc "The token ids of all token chunks."
  @spec to_ints(t) :: [integer]
  def to_ints(%__MODULE__{chunks: chunks}) do
    Enum.flat_map(chunks, fn
      %EncodedTextChunk{} = c -> EncodedTextChunk.token_list(c)
      _ -> []
    end)
  end

  @doc "The number of tokens (image chunks count their `expected_tokens`)."
  @spec length(t) :: non_neg_integer
  def length(%__MODULE__{chunks: chunks}) do
    Enum.reduce(chunks, 0, fn
      %EncodedTextChunk{} = c, acc -> acc + EncodedTextChunk.length(c)
      %{expected_tokens: n}, acc when is_integer(n) -> acc + n
      _, acc -> acc
    end)
  end

  @doc false
  def to_json(%__MODULE__{chunks: chunks}), do: %{"chunks" => Enum.map(chunks, &chunk_json/1)}
  def to_json(tokens) when is_list(tokens) or is_binary(tokens), do: to_json(from_ints(tokens))

  defp chunk_json(%EncodedTextChunk{} = c),
    do: %{"type" => "encoded_text", "tokens" => EncodedTextChunk.token_list(c)}

  defp chunk_json(%ImageChunk{} = c) do
    Tinkex.Types.Util.compact(%{
      "type" => "image",
      "data" => c.data,
      "format" => to_string(c.format),
      "expected_tokens" => c.expected_tokens
    })
  end

  defp chunk_json(%ImageAssetPointerChunk{} = c) do
    Tinkex.Types.Util.compact(%{
      "type" => "image_asset_pointer",
      "location" => c.location,
      "format" => to_string(c.format),
      "expected_tokens" => c.expected_tokens
    })
  end

  defp chunk_json(%{} = raw), do: raw

  @doc false
  def from_json(%{"chunks" => chunks}) do
    %__MODULE__{
      chunks:
        Enum.map(chunks, fn
          %{"type" => "encoded_text", "tokens" => t} -> %EncodedTextChunk{tokens: t}
          %{"type" => "image"} = c -> %ImageChunk{data: c["data"], format: String.to_atom(c["format"]), expected_tokens: c["expected_tokens"]}
          other -> other
        end)
    }
  end
end

defmodule Tinkex.Types.Datum do
  @moduledoc """
  One training example: a `model_input` and named `loss_fn_inputs`.

  Loss inputs are `Tinkex.Types.TensorData`, plain lists (dtype inferred: `target_tokens`
  and integer lists are int64, float lists and `weights`/`advantages`/`logprobs` float32) or
  `{binary, dtype}` typed arrays. Datums whose input is one token chunk (the usual case) go
  through libtinkex's bulk path: token ids and loss inputs cross the C ABI as typed arrays,
  never as JSON text.
  """
  alias Tinkex.Types.{ModelInput, TensorData}

  defstruct model_input: %ModelInput{}, loss_fn_inputs: %{}

  @type t :: %__MODULE__{
          model_input: ModelInput.t(),
          loss_fn_inputs: %{(atom | String.t()) => TensorData.t() | [number] | {binary, atom}}
        }

  @doc "A datum from a model input (or token ids) and loss inputs."
  @spec new(ModelInput.t() | [integer] | binary, map) :: t
  def new(model_input, loss_fn_inputs \\ %{})
  def new(%ModelInput{} = mi, inputs), do: %__MODULE__{model_input: mi, loss_fn_inputs: inputs}
  def new(tokens, inputs), do: new(ModelInput.from_ints(tokens), inputs)

  @doc false
  def loss_inputs(%__MODULE__{loss_fn_inputs: inputs}) do
    for {k, v} <- inputs, do: {to_string(k), TensorData.coerce(v, k)}
  end

  @doc false
  def to_json(%__MODULE__{model_input: mi} = d) do
    %{
      "model_input" => ModelInput.to_json(mi),
      "loss_fn_inputs" => Map.new(loss_inputs(d), fn {k, t} -> {k, TensorData.to_json(t)} end)
    }
  end
end
