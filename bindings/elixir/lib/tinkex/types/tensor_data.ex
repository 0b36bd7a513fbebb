defmodule Tinkex.Types.TensorData do
  @moduledoc """
  A flattened tensor: `data` with a `dtype` (`:int64` or `:float32`) and an optional
  row-major `shape`: `nil` means 1-D (`[length]`); a list is the shape as given, its product
  must equal the number of elements, and `[]` is a scalar (exactly one element) — the same
  meaning as in the C ABI and the JSON request.

  `data` is either a list of numbers or a **binary typed array in native byte order**
  (little-endian on x86-64 and aarch64). A binary may also hold `:int32` (widened to int64)
  or `:float64` (rounded to float32) elements; binaries go to libtinkex through the bulk path
  without any JSON text:

      TensorData.from_binary(<<1::signed-native-64, 2::signed-native-64>>, :int64)
      TensorData.new([0.5, 1.0], :float32)

  Tensors in results (`ForwardBackwardOutput`) are decoded with list data.
  """

  defstruct data: [], dtype: :float32, shape: nil

  @type dtype :: :int64 | :float32 | :int32 | :float64
  @type t :: %__MODULE__{data: [number] | binary, dtype: dtype, shape: [non_neg_integer] | nil}

  @doc "A tensor from a list of numbers."
  @spec new([number], dtype, [non_neg_integer] | nil) :: t
  def new(list, dtype, shape \\ nil) when is_list(list),
    do: %__MODULE__{data: list, dtype: dtype, shape: shape}

  @doc "A tensor from a native-endian typed-array binary."
  @spec from_binary(binary, dtype, [non_neg_integer] | nil) :: t
  def from_binary(bin, dtype, shape \\ nil) when is_binary(bin),
    do: %__MODULE__{data: bin, dtype: dtype, shape: shape}

  @doc "The values as a list."
  @spec to_list(t) :: [number]
  def to_list(%__MODULE__{data: l}) when is_list(l), do: l
  def to_list(%__MODULE__{data: b, dtype: :int64}), do: for(<<x::signed-native-64 <- b>>, do: x)
  def to_list(%__MODULE__{data: b, dtype: :int32}), do: for(<<x::signed-native-32 <- b>>, do: x)
  def to_list(%__MODULE__{data: b, dtype: :float32}), do: for(<<x::float-native-32 <- b>>, do: x)
  def to_list(%__MODULE__{data: b, dtype: :float64}), do: for(<<x::float-native-64 <- b>>, do: x)

  @doc "The values as a native-endian binary of the tensor's dtype."
  @spec to_binary(t) :: binary
  def to_binary(%__MODULE__{data: b}) when is_binary(b), do: b
  def to_binary(%__MODULE__{data: l, dtype: dtype}), do: pack(l, dtype)

  @doc false
  def pack(list, :int64), do: for(x <- list, into: <<>>, do: <<x::signed-native-64>>)
  def pack(list, :int32), do: for(x <- list, into: <<>>, do: <<x::signed-native-32>>)
  def pack(list, :float32), do: for(x <- list, into: <<>>, do: <<x::float-native-32>>)
  def pack(list, :float64), do: for(x <- list, into: <<>>, do: <<x::float-native-64>>)

  @doc "The number of elements."
  @spec size(t) :: non_neg_integer
  def size(%__MODULE__{data: l}) when is_list(l), do: length(l)
  def size(%__MODULE__{data: b, dtype: d}) when d in [:int64, :float64], do: div(byte_size(b), 8)
  def size(%__MODULE__{data: b}), do: div(byte_size(b), 4)

  @doc false
  # The wire dtype (int32 and float64 binaries are converted by libtinkex).
  def wire_dtype(:int32), do: :int64
  def wire_dtype(:float64), do: :float32
  def wire_dtype(d), do: d

  @doc false
  def to_json(%__MODULE__{} = t) do
    Tinkex.Types.Util.compact(%{
      "data" => to_list(t),
      "dtype" => Atom.to_string(wire_dtype(t.dtype)),
      "shape" => t.shape
    })
  end

  @doc false
  def from_json(%{"data" => data} = m) do
    %__MODULE__{
      data: data,
      dtype: dtype(Map.get(m, "dtype", "float32")),
      shape: Map.get(m, "shape")
    }
  end

  defp dtype("int64"), do: :int64
  defp dtype("float32"), do: :float32
  defp dtype(other), do: other

  @doc false
  # Accepts a TensorData, a list (dtype inferred) or a {binary, dtype} tuple.
  def coerce(%__MODULE__{} = t, _name), do: t
  def coerce({bin, dtype}, _name) when is_binary(bin), do: from_binary(bin, dtype)

  def coerce(list, name) when is_list(list) do
    dtype =
      cond do
        Enum.any?(list, &is_float/1) -> :float32
        to_string(name) in ["target_tokens", "tokens"] -> :int64
        Enum.all?(list, &is_integer/1) and to_string(name) not in float_inputs() -> :int64
        true -> :float32
      end

    new(list, dtype)
  end

  defp float_inputs, do: ~w(weights advantages logprobs sampling_logprobs values returns mask)
end
